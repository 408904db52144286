//! The protocol side: read `start`, `message` and `close` lines from stdin, run turns, and write
//! `session`, `progress`, `result`, `idle` and `error` lines to stdout.
//!
//! It writes stdout only through [`super::emit`]; everything else logs to stderr.

use super::ctx::Ctx;
use super::mcp::{Env as McpEnv, Mcp};
use super::session::Session;
use super::tools;
use super::transcript::push_user_text;
use super::transport::Http;
use super::turn::{self, Runner};
use super::{Paths, emit};
use crate::infra::protocol::{AgentLine, HostLine, Start};
use std::io::BufRead;
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, TryRecvError};

/// What the stdin thread hands over.
enum Input {
    Line(HostLine),
    Bad(String),
    Eof,
}

fn read_stdin() -> Receiver<Input> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let msg = match serde_json::from_str::<HostLine>(&line) {
                    Ok(l) => Input::Line(l),
                    Err(e) => Input::Bad(format!(
                        "unreadable host line ({e}): {}",
                        line.chars().take(200).collect::<String>()
                    )),
                };
                if tx.send(msg).is_err() {
                    return;
                }
            }
            let _ = tx.send(Input::Eof);
        })
        .expect("spawning the stdin reader");
    rx
}

fn fatal(message: String) -> i32 {
    super::log(&message);
    emit(&AgentLine::Error {
        message,
        fatal: true,
    });
    1
}

/// The whole life of claw-agent; returns the process exit code. With the argument `mcp-tools`
/// it only connects the start line's MCP servers, prints what they offer as one `result` line
/// (JSON) and exits: what `claw mcp tools` runs in the group's container.
pub fn main() -> i32 {
    let list_only = std::env::args().nth(1).as_deref() == Some("mcp-tools");
    let paths = Paths::from_env();
    let rx = read_stdin();
    let start: Start = match rx.recv() {
        // Written to work whether the protocol boxes `Start` or not.
        Ok(Input::Line(HostLine::Start(s))) => Start::clone(&s),
        Ok(Input::Bad(e)) => return fatal(format!("the first line must be a start line: {e}")),
        Ok(Input::Line(_)) => return fatal("the first line must be a start line".into()),
        Ok(Input::Eof) | Err(_) => return fatal("stdin closed before the start line".into()),
    };
    let port = match super::relay::start(&paths.proxy_socket) {
        Ok(p) => p,
        Err(e) => return fatal(format!("cannot open the loopback relay to the proxy: {e}")),
    };
    // Fail fast and clearly when the host did not mount its proxy, rather than retrying for a minute.
    // (A metadata check, not a test connection, so the proxy never sees an empty request.)
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(&paths.proxy_socket) {
        Ok(m) if m.file_type().is_socket() => {}
        other => {
            let why = other.map_or_else(|e| e.to_string(), |_| "not a socket".into());
            return fatal(format!(
                "cannot use the host's proxy socket at {}: {why} (run-group mounts it under /run/claw; set CLAW_PROXY_SOCKET when testing)",
                paths.proxy_socket.display()
            ));
        }
    }
    let proxy_url = format!("http://127.0.0.1:{port}");
    let mcp = Mcp::start(
        &start.mcp,
        &McpEnv {
            socket: &paths.proxy_socket,
            group: &paths.group(),
            proxy_url: &proxy_url,
        },
    );
    if list_only {
        // `claw mcp tools`: what the servers offer, then exit without a model call.
        emit(&AgentLine::Result {
            text: mcp.listing().to_string(),
        });
        return 0;
    }
    let mut session = Session::open(&paths.state_dir, start.session_id.as_deref());
    emit(&AgentLine::Session {
        id: session.id.clone(),
    });
    let mut system = super::prompt::system(&paths, &start);
    for (name, why) in mcp.failures() {
        system.push_str(&format!(
            "\n\nMCP server `{name}` is unavailable in this run ({why}); its tools are not offered."
        ));
    }
    let mut specs = tools::all_specs();
    specs.extend(mcp.specs().iter().cloned());
    let ctx = Ctx {
        http: Http::new(&proxy_url),
        proxy_url,
        paths,
        usage: Mutex::new(Default::default()),
        start,
        mcp,
    };
    let runner = Runner {
        label: "",
        system: &system,
        tools: &specs,
        compact: true,
    };
    let mut pending = vec![(
        super::prompt::first_prompt(&ctx.start),
        ctx.start.images.clone(),
    )];
    let mut closing = false;
    loop {
        for (text, images) in pending.drain(..) {
            push_user_text(&mut session.messages, &text);
            super::image::attach(&ctx.paths.group(), &mut session.messages, &images);
        }
        let mut inbox = || {
            let mut texts = Vec::new();
            loop {
                match rx.try_recv() {
                    Ok(Input::Line(HostLine::Message { text, images })) => {
                        texts.push((text, images))
                    }
                    Ok(Input::Line(HostLine::Close))
                    | Ok(Input::Eof)
                    | Err(TryRecvError::Disconnected) => {
                        closing = true;
                        break;
                    }
                    Ok(Input::Line(HostLine::Start(_))) => {
                        super::log("ignoring a second start line")
                    }
                    Ok(Input::Bad(e)) => super::log(&e),
                    Err(TryRecvError::Empty) => break,
                }
            }
            texts
        };
        let result = turn::run(&ctx, &runner, &mut session, &mut inbox);
        if let Err(e) = session.save(&ctx.paths.state_dir) {
            super::log(&format!(
                "cannot save the transcript in {}: {e}",
                ctx.paths.state_dir.display()
            ));
        }
        match result {
            Ok(text) => {
                if !text.trim().is_empty() {
                    emit(&AgentLine::Result { text });
                }
                emit(&AgentLine::Idle {
                    usage: Some(ctx.take_usage()),
                });
            }
            Err(e) => return fatal(format!("the model call failed: {e}")),
        }
        if closing {
            return 0;
        }
        // Idle: wait for the next message, then take any others that already arrived.
        loop {
            match rx.recv() {
                Ok(Input::Line(HostLine::Message { text, images })) => {
                    pending.push((text, images));
                    break;
                }
                Ok(Input::Line(HostLine::Close)) | Ok(Input::Eof) | Err(_) => return 0,
                Ok(Input::Line(HostLine::Start(_))) => super::log("ignoring a second start line"),
                Ok(Input::Bad(e)) => super::log(&e),
            }
        }
    }
}
