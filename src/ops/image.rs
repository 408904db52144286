//! The agent image: staging its build context, building it with the runtime's CLI while showing
//! progress, and asking the runtime whether (and since when) an image exists.
//!
//! It owns nothing persistent: the context is a temporary folder holding `container/Dockerfile` and
//! the `claw-agent` binary, removed after the build. It never touches the network itself and never
//! passes anything through a shell.

use std::fmt;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::infra::runtime::RuntimeKind;

/// How many lines of build output are kept to explain a failure.
const TAIL_LINES: usize = 30;

/// What a finished build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    pub tag: String,
    pub duration: Duration,
    /// Bytes, as the runtime reports the image; `None` where it does not say.
    pub size_bytes: Option<u64>,
}

/// A failed image operation, with the output that explains it.
#[derive(Debug)]
pub struct ImageError(pub String);

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ImageError {}

/// A staged build context, removed when dropped.
#[derive(Debug)]
pub struct StagedContext(PathBuf);

impl StagedContext {
    /// The folder to pass to `build`.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StagedContext {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the context folder's files and the agent binary (as `claw-agent`) into a fresh temp dir.
pub fn stage_context(agent_binary: &Path, context_src: &Path) -> Result<StagedContext, ImageError> {
    let err = |what: String| move |e: std::io::Error| ImageError(format!("{what}: {e}"));
    if !context_src.join("Dockerfile").is_file() {
        return Err(ImageError(format!(
            "no Dockerfile in {}: pass the repository's container/ folder",
            context_src.display()
        )));
    }
    if !agent_binary.is_file() {
        return Err(ImageError(format!(
            "agent binary {} not found: build it first with `cargo build --release --bin claw-agent`",
            agent_binary.display()
        )));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!("claw-image-{}-{nanos}", std::process::id()));
    // create_dir (not _all) fails if it exists, so a stale or planted folder is never reused.
    std::fs::create_dir(&path).map_err(err(format!("cannot create {}", path.display())))?;
    let dir = StagedContext(path);
    let entries = std::fs::read_dir(context_src)
        .map_err(err(format!("cannot read {}", context_src.display())))?;
    for entry in entries {
        let entry = entry.map_err(err(format!("cannot read {}", context_src.display())))?;
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            std::fs::copy(entry.path(), dir.path().join(entry.file_name()))
                .map_err(err(format!("cannot copy {}", entry.path().display())))?;
        }
    }
    let staged = dir.path().join("claw-agent");
    std::fs::copy(agent_binary, &staged)
        .map_err(err(format!("cannot copy {}", agent_binary.display())))?;
    // Symbols are a tenth of a debug build's size and useless in the image. Best effort: a
    // missing `strip` (or one that cannot read a cross-built binary) leaves the copy as it was.
    let _ = duct::cmd("strip", [&staged])
        .stdout_null()
        .stderr_null()
        .unchecked()
        .run();
    Ok(dir)
}

/// Arguments for `<runtime> build`; the same spelling works for all three runtimes.
pub fn build_args(tag: &str, context: &Path) -> Vec<String> {
    vec![
        "build".into(),
        "-t".into(),
        tag.into(),
        context.display().to_string(),
    ]
}

/// True for a line that starts a build step in podman, classic docker or BuildKit output.
fn is_step_line(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("STEP ")
        || l.starts_with("Step ")
        || (l.starts_with('#') && l.contains(" [") && l.contains(']'))
}

/// Builds the agent image, streaming the runtime's output as progress, and reports time and size.
pub fn build(
    kind: RuntimeKind,
    image_tag: &str,
    agent_binary: &Path,
    context_src: &Path,
    progress: bool,
) -> Result<BuildReport, ImageError> {
    let ctx = stage_context(agent_binary, context_src)?;
    let args = build_args(image_tag, ctx.path());
    let started = Instant::now();
    let reader = duct::cmd(kind.program(), &args)
        .stderr_to_stdout()
        .stdin_null()
        .unchecked()
        .reader()
        .map_err(|e| {
            ImageError(format!(
                "cannot start `{}`: {e}; is it installed?",
                kind.program()
            ))
        })?;

    let tty = progress && std::io::stderr().is_terminal();
    let spinner = tty.then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(Duration::from_millis(120));
        pb.set_message(format!("{} build -t {image_tag}", kind.program()));
        pb
    });
    let mut tail: Vec<String> = Vec::new();
    let mut step = String::new();
    for line in BufReader::new(&reader).lines() {
        let line = line.map_err(|e| ImageError(format!("reading build output: {e}")))?;
        if is_step_line(&line) {
            step = line.trim().to_string();
        }
        match &spinner {
            Some(pb) => {
                let last: String = line.trim().chars().take(60).collect();
                pb.set_message(format!("{step} | {last}"));
            }
            None if progress => eprintln!("{line}"),
            None => {}
        }
        tail.push(line);
        if tail.len() > TAIL_LINES {
            tail.remove(0);
        }
    }
    let status = reader
        .try_wait()
        .map_err(|e| ImageError(format!("waiting for the build: {e}")))?
        .map(|o| o.status);
    if let Some(pb) = &spinner {
        pb.finish_and_clear();
    }
    let duration = started.elapsed();
    if !status.is_some_and(|s| s.success()) {
        return Err(ImageError(format!(
            "`{} {}` failed after {:.1}s; last output:\n{}",
            kind.program(),
            args.join(" "),
            duration.as_secs_f64(),
            tail.join("\n")
        )));
    }
    let size_bytes = image_size(kind, image_tag);
    if progress {
        let size = size_bytes
            .map(|b| format!("{:.1} MB", b as f64 / 1e6))
            .unwrap_or_else(|| "size unknown".into());
        eprintln!(
            "built {image_tag} in {:.1}s ({size})",
            duration.as_secs_f64()
        );
    }
    Ok(BuildReport {
        tag: image_tag.into(),
        duration,
        size_bytes,
    })
}

/// Runs `<runtime> image inspect` with a Go template, returning trimmed stdout on success.
fn inspect(kind: RuntimeKind, tag: &str, format: &str) -> Option<String> {
    let out = Command::new(kind.program())
        .args(["image", "inspect", "--format", format, tag])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the runtime has an image with this tag locally.
pub fn image_exists(kind: RuntimeKind, tag: &str) -> bool {
    let args: Vec<&str> = match kind {
        RuntimeKind::Podman => vec!["image", "exists", tag],
        _ => vec!["image", "inspect", tag],
    };
    Command::new(kind.program())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// When the local image was created, or `None` if it is missing (docker and podman only).
pub fn image_created_at(kind: RuntimeKind, tag: &str) -> Option<DateTime<Utc>> {
    if kind == RuntimeKind::AppleContainer {
        return None;
    }
    let json = inspect(kind, tag, "{{json .Created}}")?;
    let s: String = serde_json::from_str(&json).ok()?;
    DateTime::parse_from_rfc3339(&s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The local image's size in bytes (docker and podman only).
pub fn image_size(kind: RuntimeKind, tag: &str) -> Option<u64> {
    if kind == RuntimeKind::AppleContainer {
        return None;
    }
    inspect(kind, tag, "{{.Size}}")?.parse().ok()
}

/// The `container/` folder of a source checkout, for callers that build from the repository.
pub fn default_context_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("container")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_lines_of_each_builder() {
        let cases = [
            ("STEP 2/6: RUN apt-get update", true),
            ("Step 3/7 : COPY claw-agent /usr/local/bin/", true),
            ("#7 [3/4] COPY claw-agent /usr/local/bin/claw-agent", true),
            ("#7 DONE 0.1s", false),
            (
                "Get:1 http://deb.debian.org/debian bookworm InRelease",
                false,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(is_step_line(line), want, "{line}");
        }
    }

    #[test]
    fn staging_copies_dockerfile_and_agent() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        let bin = src.path().join("agent-bin");
        std::fs::write(&bin, b"\x7fELF").unwrap();
        let ctx = stage_context(&bin, src.path()).unwrap();
        assert_eq!(
            std::fs::read(ctx.path().join("Dockerfile")).unwrap(),
            b"FROM scratch\n"
        );
        assert_eq!(
            std::fs::read(ctx.path().join("claw-agent")).unwrap(),
            b"\x7fELF"
        );

        let missing = stage_context(&src.path().join("nope"), src.path()).unwrap_err();
        assert!(missing.0.contains("cargo build"), "{missing}");
        let no_df = stage_context(&bin, &src.path().join("x")).unwrap_err();
        assert!(no_df.0.contains("no Dockerfile"), "{no_df}");
    }

    #[test]
    fn build_args_are_a_vector() {
        assert_eq!(
            build_args("claw-agent:latest", Path::new("/tmp/ctx dir")),
            ["build", "-t", "claw-agent:latest", "/tmp/ctx dir"]
        );
    }
}
