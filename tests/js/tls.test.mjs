// The JS SDK over TLS with bearer tokens. Like durability.test.mjs this starts its OWN
// sidecar (SIDECAR_BIN, exported by run.sh), here with --tls-cert/--tls-key and
// --auth-tokens-file; the CA and server certificate are made with openssl. The SDK takes
// TLS as `credentials` (grpc-js, the copy the SDK itself uses) and the token through its
// `metadataGenerator`.

import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import {
  TaskHubGrpcClient,
  TaskHubGrpcWorker,
  NoOpLogger,
  OrchestrationStatus as S,
} from "@microsoft/durabletask-js";
import { uid } from "./helpers.mjs";
import { BIN, startOnFreePorts } from "./sidecar.mjs";

const TOKENS = {
  worker: "js-worker-token-0123456789",
  client: "js-client-token-0123456789",
  read: "js-read-token-0123456789",
};

/** A throwaway CA and a server certificate for localhost / 127.0.0.1, made with openssl. */
function makeCertificates(dir) {
  const f = (name) => path.join(dir, name);
  const ossl = (...args) => execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
    "-keyout", f("ca.key"), "-out", f("ca.pem"), "-subj", "/CN=durabletask JS test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign");
  ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=localhost");
  writeFileSync(f("ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n");
  ossl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"),
    "-CAcreateserial", "-days", "1", "-extfile", f("ext"), "-out", f("server.pem"));
  return { ca: readFileSync(f("ca.pem")), cert: f("server.pem"), key: f("server.key") };
}

const bearer = (role) => async () => {
  const m = new grpc.Metadata();
  if (role) m.set("authorization", `Bearer ${TOKENS[role]}`);
  return m;
};

describe("TLS and bearer tokens (own sidecar)", { skip: !BIN && "SIDECAR_BIN not set" }, () => {
  let dir, sidecar, address, credentials;
  const clients = [];
  const client = (role) => {
    const c = new TaskHubGrpcClient({ hostAddress: address, credentials, metadataGenerator: bearer(role), logger: new NoOpLogger() });
    clients.push(c);
    return c;
  };

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "dts-js-tls-"));
    const certs = makeCertificates(dir);
    credentials = grpc.credentials.createSsl(certs.ca);
    const tokens = path.join(dir, "tokens.txt");
    writeFileSync(tokens, Object.entries(TOKENS).map(([role, token]) => `${role} ${token}\n`).join(""));
    sidecar = await startOnFreePorts(1, ([port]) => ({
      dir,
      port,
      args: ["--http-port", "off", "--db", path.join(dir, "db.sqlite"),
        "--tls-cert", certs.cert, "--tls-key", certs.key, "--auth-tokens-file", tokens],
    }));
    address = `localhost:${sidecar.port}`;
  });

  after(async () => {
    for (const c of clients) await c.stop().catch(() => {});
    await sidecar?.kill("SIGTERM");
    if (process.exitCode) console.error(sidecar?.log());
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs an orchestration with a worker and a client over TLS, each with its token", async () => {
    const worker = new TaskHubGrpcWorker({
      hostAddress: address, credentials, metadataGenerator: bearer("worker"), logger: new NoOpLogger(), shutdownTimeoutMs: 2000,
    });
    worker.addNamedOrchestrator("T_Hello", async function* (ctx, name) {
      return yield ctx.callActivity("T_Greet", name);
    });
    worker.addNamedActivity("T_Greet", (_ctx, name) => `Hello, ${name}!`);
    await worker.start();
    try {
      const c = client("client");
      const id = await c.scheduleNewOrchestration("T_Hello", "TLS", uid("js-tls"));
      const state = await c.waitForOrchestrationCompletion(id, true, 30);
      assert.equal(state?.runtimeStatus, S.COMPLETED, JSON.stringify(state?.failureDetails));
      assert.equal(state.serializedOutput, JSON.stringify("Hello, TLS!"));
      const read = await client("read").getOrchestrationState(id, true);
      assert.equal(read?.serializedOutput, JSON.stringify("Hello, TLS!"));
    } finally {
      await worker.stop();
    }
  });

  it("refuses a missing token and a role that does not cover the call", async () => {
    await assert.rejects(client(null).scheduleNewOrchestration("T_Hello", "x"), (e) => {
      assert.equal(e.code, grpc.status.UNAUTHENTICATED, String(e));
      assert.match(e.details ?? e.message, /missing bearer token/);
      return true;
    });
    await assert.rejects(client("read").scheduleNewOrchestration("T_Hello", "x"), (e) => {
      assert.equal(e.code, grpc.status.PERMISSION_DENIED, String(e));
      assert.match(e.details ?? e.message, /role `read` may not call StartInstance/);
      return true;
    });
  });
});
