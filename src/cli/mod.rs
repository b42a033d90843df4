//! The command-line client: `durabletask-sidecar <command>` talks gRPC to a running sidecar
//! (this one or any other Durable Task sidecar) at `--addr`, the way `func durable` manages
//! Durable Functions. No command means serve (see `config`).
//!
//! This door uses only the generated gRPC client (`crate::proto`) and the standard health
//! client: nothing in-process, no `service`, `engine` or `store` types (STYLE.md §14).
//! `mod.rs` holds the clap types and the dispatch; `connect` the channel and error
//! wording; `output` tables and JSON; one file per group of commands.

mod connect;
mod entities;
mod history;
mod input;
mod instances;
mod output;

use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

pub use connect::CliError;
pub use input::{DateTimeArg, DurationArg, Payload};

/// Default of `--addr`: the sidecar's own default listen address.
pub const DEFAULT_ADDR: &str = "localhost:4001";

/// Exit status of a client command. `wait` tells the final state through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: the command did what was asked (for `wait`: the instance COMPLETED; for
    /// `health`: the server is SERVING).
    Success = 0,
    /// 1: an error (unreachable server, gRPC error, unknown instance, bad input file), or
    /// `health` found the server not SERVING.
    Error = 1,
    /// 2: bad arguments (clap's usage error).
    Usage = 2,
    /// 3: `wait`: the instance FAILED.
    Failed = 3,
    /// 4: `wait`: the instance was TERMINATED (or CANCELED).
    Terminated = 4,
    /// 5: `wait`: `--timeout` passed before the instance ended.
    Timeout = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Options every client command takes.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ClientArgs {
    /// Sidecar to talk to: `host:port` or `http://host:port`.
    #[arg(long, env = "DURABLETASK_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: String,

    /// Task hub to act on (sent as `taskhub` metadata); default: the `default` hub.
    #[arg(long, env = "DURABLETASK_TASK_HUB")]
    pub task_hub_name: Option<String>,

    /// Output format: a readable table, or JSON for scripts (field names are stable).
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns or `key  value` lines.
    #[default]
    Table,
    /// JSON (one document; `get-history --follow` prints one object per line).
    Json,
}

/// A client command. Names and options follow `func durable` where it has them.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Start a new orchestration instance.
    StartNew(StartNew),
    /// Show the status of one orchestration instance.
    GetRuntimeStatus(GetRuntimeStatus),
    /// Show the history of an orchestration instance (`--follow`: until it ends).
    GetHistory(GetHistory),
    /// List orchestration instances, a page at a time, optionally filtered.
    GetInstances(GetInstances),
    /// Send an event to a waiting orchestration instance.
    RaiseEvent(RaiseEvent),
    /// Terminate an orchestration instance.
    Terminate(WithReason),
    /// Rewind a FAILED orchestration instance: retry what failed, keep what succeeded.
    Rewind(WithReason),
    /// Suspend a running orchestration instance.
    Suspend(WithReason),
    /// Resume a suspended orchestration instance.
    Resume(WithReason),
    /// Start an ended orchestration instance again, with its original input.
    Restart(Restart),
    /// Wait until an orchestration instance ends; the exit status tells how it ended.
    Wait(Wait),
    /// Delete ended instances and their history: one by `--id`, or all that match filters.
    PurgeHistory(PurgeHistory),
    /// Delete every instance, history and entity of the task hub.
    DeleteTaskHub(Plain),
    /// Show one durable entity and its state.
    GetEntity(GetEntity),
    /// List durable entities, a page at a time.
    ListEntities(ListEntities),
    /// Send an operation to a durable entity (fire and forget).
    SignalEntity(SignalEntity),
    /// Remove empty entities and release locks held by instances that no longer run.
    CleanEntities(CleanEntities),
    /// Check that the server is SERVING (gRPC health); exit status 0 if so, 1 if not.
    Health(Health),
}

/// Arguments of a command that takes nothing but the client options.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Plain {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `start-new`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct StartNew {
    /// Name of the orchestrator to start.
    #[arg(long)]
    pub function_name: String,
    /// Instance id (default: the server picks a random one).
    #[arg(long)]
    pub id: Option<String>,
    /// Input: inline JSON, `@file.json`, or `@-` for standard input.
    #[arg(long)]
    pub input: Option<Payload>,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `get-runtime-status`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct GetRuntimeStatus {
    /// Instance id.
    #[arg(long)]
    pub id: String,
    /// Include the instance's input.
    #[arg(long)]
    pub show_input: bool,
    /// Include the instance's output.
    #[arg(long)]
    pub show_output: bool,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `get-history`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct GetHistory {
    /// Instance id.
    #[arg(long)]
    pub id: String,
    /// Keep printing new events as they are committed, until the instance ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `get-instances`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct GetInstances {
    #[command(flatten)]
    pub(crate) filter: InstanceFilter,
    /// Page size (default: the server's, 100 on this sidecar).
    #[arg(long)]
    pub top: Option<u16>,
    /// Continue after the page that printed this token.
    #[arg(long)]
    pub continuation_token: Option<String>,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// Filters shared by `get-instances` and `purge-history`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct InstanceFilter {
    /// Only instances created at or after this time (RFC 3339, or `YYYY-MM-DD[THH:MM[:SS]]` in UTC).
    #[arg(long)]
    pub created_after: Option<DateTimeArg>,
    /// Only instances created before this time (same formats).
    #[arg(long)]
    pub created_before: Option<DateTimeArg>,
    /// Only instances in these states (comma- or space-separated).
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1.., ignore_case = true)]
    pub runtime_status: Vec<RuntimeStatus>,
}

impl InstanceFilter {
    fn is_empty(&self) -> bool {
        self.created_after.is_none()
            && self.created_before.is_none()
            && self.runtime_status.is_empty()
    }
}

/// An orchestration status as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "lower")]
pub enum RuntimeStatus {
    /// RUNNING.
    Running,
    /// COMPLETED.
    Completed,
    /// CONTINUED_AS_NEW.
    #[value(alias = "continued-as-new")]
    ContinuedAsNew,
    /// FAILED.
    Failed,
    /// CANCELED.
    Canceled,
    /// TERMINATED.
    Terminated,
    /// PENDING.
    Pending,
    /// SUSPENDED.
    Suspended,
}

/// `raise-event`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RaiseEvent {
    /// Instance id.
    #[arg(long)]
    pub id: String,
    /// Name of the event the orchestration waits for.
    #[arg(long)]
    pub event_name: String,
    /// Event payload: inline JSON, `@file.json`, or `@-` for standard input.
    #[arg(long)]
    pub event_data: Option<Payload>,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `terminate`, `rewind`, `suspend`, `resume`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct WithReason {
    /// Instance id.
    #[arg(long)]
    pub id: String,
    /// Why (plain text; `terminate` makes it the instance's output, as a JSON string).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `restart`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Restart {
    /// Instance id.
    #[arg(long)]
    pub id: String,
    /// Start the new run under a new random instance id instead of reusing `--id`.
    #[arg(long)]
    pub new_instance_id: bool,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `wait`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Wait {
    /// Instance id.
    #[arg(long)]
    pub id: String,
    /// Give up after this long (`90`, `90s`, `500ms`, `5m`, `2h`); default: wait forever.
    #[arg(long)]
    pub timeout: Option<DurationArg>,
    /// Include the instance's output in what is printed.
    #[arg(long)]
    pub show_output: bool,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `purge-history`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PurgeHistory {
    /// Purge this one instance (whatever its filters would say).
    #[arg(long, conflicts_with_all = ["created_after", "created_before", "runtime_status"])]
    pub id: Option<String>,
    #[command(flatten)]
    pub(crate) filter: InstanceFilter,
    /// How long one server-side round of a filtered purge may run before progress is
    /// reported (hidden: the default suits people; tests make it short).
    #[arg(long, hide = true, default_value = "1s")]
    pub round: DurationArg,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `get-entity`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct GetEntity {
    /// Entity id, `@name@key`.
    #[arg(long)]
    pub id: String,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `list-entities`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListEntities {
    /// Only entities whose id starts with this (`counter` or `@counter` = every `counter` entity).
    #[arg(long)]
    pub id_prefix: Option<String>,
    /// Only entities modified at or after this time (RFC 3339, or `YYYY-MM-DD[THH:MM[:SS]]` in UTC).
    #[arg(long)]
    pub modified_after: Option<DateTimeArg>,
    /// Only entities modified before this time (same formats).
    #[arg(long)]
    pub modified_before: Option<DateTimeArg>,
    /// Include each entity's state.
    #[arg(long)]
    pub show_state: bool,
    /// Page size (default: the server's).
    #[arg(long)]
    pub top: Option<u16>,
    /// Continue after the page that printed this token.
    #[arg(long)]
    pub continuation_token: Option<String>,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `signal-entity`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct SignalEntity {
    /// Entity id, `@name@key`.
    #[arg(long)]
    pub id: String,
    /// Operation to run.
    #[arg(long)]
    pub operation: String,
    /// Operation input: inline JSON, `@file.json`, or `@-` for standard input.
    #[arg(long)]
    pub input: Option<Payload>,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `clean-entities`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CleanEntities {
    /// Keep entities that have no state and no lock.
    #[arg(long)]
    pub keep_empty: bool,
    /// Keep locks whose owning orchestration no longer runs.
    #[arg(long)]
    pub keep_orphaned_locks: bool,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// `health`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct Health {
    /// Service to check; empty for the server as a whole.
    #[arg(long, default_value = "TaskHubSidecarService")]
    pub service: String,
    /// Fail if there is no answer within this long (`5s`, `500ms`, ...).
    #[arg(long, default_value = "5s")]
    pub timeout: DurationArg,
    #[command(flatten)]
    pub(crate) client: ClientArgs,
}

/// Runs one client command and prints its result; errors go to stderr as one line.
pub async fn run(command: Command) -> ExitCode {
    match dispatch(command).await {
        Ok(exit) => exit.into(),
        Err(err) => {
            eprintln!("durabletask-sidecar: error: {err}");
            Exit::Error.into()
        }
    }
}

async fn dispatch(command: Command) -> Result<Exit, CliError> {
    use Command as C;
    match command {
        C::StartNew(a) => instances::start_new(a).await,
        C::GetRuntimeStatus(a) => instances::get_runtime_status(a).await,
        C::GetHistory(a) => history::get_history(a).await,
        C::GetInstances(a) => instances::get_instances(a).await,
        C::RaiseEvent(a) => instances::raise_event(a).await,
        C::Terminate(a) => instances::terminate(a).await,
        C::Rewind(a) => instances::rewind(a).await,
        C::Suspend(a) => instances::suspend(a).await,
        C::Resume(a) => instances::resume(a).await,
        C::Restart(a) => instances::restart(a).await,
        C::Wait(a) => instances::wait(a).await,
        C::PurgeHistory(a) => instances::purge_history(a).await,
        C::DeleteTaskHub(a) => instances::delete_task_hub(a).await,
        C::GetEntity(a) => entities::get_entity(a).await,
        C::ListEntities(a) => entities::list_entities(a).await,
        C::SignalEntity(a) => entities::signal_entity(a).await,
        C::CleanEntities(a) => entities::clean_entities(a).await,
        C::Health(a) => connect::health(a).await,
    }
}
