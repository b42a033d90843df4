//! `get-history`, and `get-history --follow`: a live tail of an instance's history until
//! it ends.
//!
//! The wire has no "history changed" stream, so following re-reads the history after
//! each change. The pause between reads is a `WaitForInstanceCompletion` call with a short
//! deadline: it returns at once when the instance ends, so the last events print without
//! delay; intermediate events show within `FOLLOW_PAUSE`.

use std::time::Duration;

use serde_json::Value;

use super::connect::{client, CliError, Client};
use super::instances::{instance, slice_over};
use super::output::{self, write_out, Printer};
use super::{Exit, GetHistory};
use crate::proto as pb;

/// Longest pause between two reads while following.
const FOLLOW_PAUSE: Duration = Duration::from_millis(500);
/// Widths of the fixed history columns, so rows can print as they arrive.
const ID_WIDTH: usize = 4;
const TIME_WIDTH: usize = 24;
const TYPE_WIDTH: usize = 33;

/// `get-history`.
pub(super) async fn get_history(args: GetHistory) -> Result<Exit, CliError> {
    let mut c = client(&args.client).await?;
    let printer = Printer::new(args.client.output);
    if !args.follow {
        let events = history(&mut c, &args.id).await?;
        let doc = Value::Array(events.iter().map(output::event_json).collect());
        let mut text = vec![row(&output::EVENT_HEADERS.map(str::to_owned))];
        text.extend(events.iter().map(|e| row(&output::event_row(e))));
        printer.one(&doc, &text.join("\n"))?;
        return Ok(Exit::Success);
    }
    follow(&mut c, &args.id, printer).await
}

/// Prints events as they are committed: one row (or one JSON object per line) each.
async fn follow(c: &mut Client, id: &str, printer: Printer) -> Result<Exit, CliError> {
    let mut shown: Vec<pb::HistoryEvent> = Vec::new();
    // Printed once the instance is known to exist, so an unknown id prints only the error.
    let mut header = !printer.json();
    loop {
        // Status first: once it reads as ended, the history read after it is final, as
        // the server commits the last events and the status together.
        let state = instance(c, id, false).await?;
        if std::mem::take(&mut header) {
            write_out(&format!(
                "{}\n",
                row(&output::EVENT_HEADERS.map(str::to_owned))
            ))?;
        }
        let events = history(c, id).await?;
        let fresh = if events.starts_with(&shown) {
            &events[shown.len()..]
        } else {
            // A rewind or continue-as-new replaced the history: show the new one whole.
            eprintln!("get-history: the history of {id} was rewritten (rewind or continue-as-new); showing it from the start");
            &events[..]
        };
        for e in fresh {
            let line = if printer.json() {
                output::event_json(e).to_string()
            } else {
                row(&output::event_row(e))
            };
            write_out(&format!("{line}\n"))?;
        }
        shown = events;
        if ended(state.orchestration_status) {
            return Ok(Exit::Success);
        }
        pause(c, id).await?;
    }
}

fn ended(status: i32) -> bool {
    use pb::OrchestrationStatus as S;
    matches!(
        S::try_from(status),
        Ok(S::Completed | S::Failed | S::Terminated | S::Canceled)
    )
}

/// Waits up to `FOLLOW_PAUSE`, less if the instance ends meanwhile.
async fn pause(c: &mut Client, id: &str) -> Result<(), CliError> {
    let mut request = tonic::Request::new(pb::GetInstanceRequest {
        instance_id: id.to_owned(),
        get_inputs_and_outputs: false,
    });
    request.set_timeout(FOLLOW_PAUSE);
    match tokio::time::timeout(FOLLOW_PAUSE * 2, c.wait_for_instance_completion(request)).await {
        Err(_) | Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) if slice_over(&status) => Ok(()),
        Ok(Err(status)) => Err(CliError::rpc("WaitForInstanceCompletion", status)),
    }
}

/// The current execution's history, all chunks in order.
async fn history(c: &mut Client, id: &str) -> Result<Vec<pb::HistoryEvent>, CliError> {
    let rpc = |s| CliError::rpc("StreamInstanceHistory", s);
    let mut stream = c
        .stream_instance_history(pb::StreamInstanceHistoryRequest {
            instance_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let mut events = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(rpc)? {
        events.extend(chunk.events);
    }
    Ok(events)
}

/// A history row in fixed columns (details last, unpadded).
fn row(cells: &[String]) -> String {
    let [id, time, kind, details] = cells else {
        return cells.join("  ");
    };
    format!("{id:>ID_WIDTH$}  {time:<TIME_WIDTH$}  {kind:<TYPE_WIDTH$}  {details}")
        .trim_end()
        .to_owned()
}
