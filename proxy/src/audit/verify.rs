//! `pgveil audit verify`: walks a hash chain across rotated files and names the first
//! line that was changed, removed, inserted or reordered.
//!
//! Checks per line, in order: the line is a well-formed event whose `hash` matches its
//! bytes (else it was changed); its `seq` follows the previous line's (else lines were
//! removed, inserted or reordered); its `prev_hash` is the previous line's `hash` (else
//! the line before it was rewritten with a recomputed hash). The first line's
//! `prev_hash` must be the genesis when one is given.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use super::chain::{check_line, LineError};
use super::config::DEFAULT_GENESIS;

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Lines (events) checked.
    pub events: u64,
    /// Files read.
    pub files: usize,
    /// `seq` of the first and last event (`None` when there are no events).
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// `prev_hash` of the first event: the genesis, or the hash of an event in a file
    /// that is not part of the input (rotated away).
    pub first_prev_hash: Option<String>,
    /// `hash` of the last event: keep it elsewhere to detect truncation later.
    pub last_hash: Option<String>,
}

/// Why a chain did not verify. `line` counts from 1 within `path`.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no audit files given")]
    NoFiles,
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: line {line}: {problem}", path.display())]
    Broken {
        path: PathBuf,
        line: u64,
        problem: ChainProblem,
    },
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainProblem {
    #[error("malformed line: {0}")]
    Malformed(String),
    #[error("hash mismatch (seq {seq}): the line was changed")]
    Changed { seq: u64 },
    #[error("expected seq {expected}, found {found}: {}", seq_hint(*expected, *found))]
    Seq { expected: u64, found: u64 },
    #[error("prev_hash is not the hash of the previous line (seq {seq}): the previous line was changed or replaced")]
    Link { seq: u64 },
    #[error("prev_hash of the first line is not the genesis hash: lines were removed from the start, or another genesis was used")]
    Genesis,
}

fn seq_hint(expected: u64, found: u64) -> &'static str {
    if found > expected {
        "a line was removed, or lines were reordered"
    } else {
        "a line was inserted, duplicated or reordered"
    }
}

/// Verifies the chain through `paths`, oldest file first. With `genesis`, the first line
/// must have seq 1 and that `prev_hash`; without, the first line anchors the chain
/// (rotated-away files are allowed) and the report says where it starts.
pub fn verify(paths: &[PathBuf], genesis: Option<&str>) -> Result<VerifyReport, VerifyError> {
    if paths.is_empty() {
        return Err(VerifyError::NoFiles);
    }
    let mut report = VerifyReport {
        events: 0,
        files: 0,
        first_seq: None,
        last_seq: None,
        first_prev_hash: None,
        last_hash: None,
    };
    for path in paths {
        verify_file(path, genesis, &mut report)?;
        report.files += 1;
    }
    Ok(report)
}

fn verify_file(
    path: &Path,
    genesis: Option<&str>,
    report: &mut VerifyReport,
) -> Result<(), VerifyError> {
    let io_err = |source| VerifyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let broken = |line, problem| VerifyError::Broken {
        path: path.to_path_buf(),
        line,
        problem,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io_err)?);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io_err)? == 0 {
            return Ok(());
        }
        line_no += 1;
        if buf.pop() != Some(b'\n') {
            return Err(broken(
                line_no,
                ChainProblem::Malformed("incomplete last line (no newline)".into()),
            ));
        }
        let fields = check_line(&buf).map_err(|e| {
            broken(
                line_no,
                match e {
                    LineError::Malformed(what) => ChainProblem::Malformed(what),
                    LineError::HashMismatch { seq } => ChainProblem::Changed { seq },
                },
            )
        })?;
        match (report.last_seq, &report.last_hash) {
            (Some(last_seq), Some(last_hash)) => {
                let expected = last_seq.saturating_add(1);
                if fields.seq != expected {
                    return Err(broken(
                        line_no,
                        ChainProblem::Seq {
                            expected,
                            found: fields.seq,
                        },
                    ));
                }
                if &fields.prev_hash != last_hash {
                    return Err(broken(line_no, ChainProblem::Link { seq: fields.seq }));
                }
            }
            _ => {
                if let Some(g) = genesis {
                    if fields.seq != 1 {
                        return Err(broken(
                            line_no,
                            ChainProblem::Seq {
                                expected: 1,
                                found: fields.seq,
                            },
                        ));
                    }
                    if fields.prev_hash != g {
                        return Err(broken(line_no, ChainProblem::Genesis));
                    }
                }
                report.first_seq = Some(fields.seq);
                report.first_prev_hash = Some(fields.prev_hash);
            }
        }
        report.events += 1;
        report.last_seq = Some(fields.seq);
        report.last_hash = Some(fields.hash);
    }
}

/// The files of a rotated log, oldest first: `<base>.<N>` by descending N, then `<base>`.
pub fn discover_rotated(base: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(name) = base.file_name().and_then(|n| n.to_str()) else {
        return Ok(vec![base.to_path_buf()]);
    };
    let prefix = format!("{name}.");
    let mut rotated: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(n) = file_name
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        rotated.push((n, base.with_file_name(&file_name)));
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if base.exists() || files.is_empty() {
        files.push(base.to_path_buf());
    }
    Ok(files)
}

/// What `pgveil audit verify` prints, and whether the chain is intact. One path: that
/// file and its rotated siblings; several: exactly those files, oldest first.
pub fn cli_verify(paths: &[PathBuf]) -> (bool, String) {
    cli_verify_with(paths, None)
}

/// [`cli_verify`] with a known genesis (`--genesis`): the first line must then be seq 1
/// chained to it, so lines removed from the start are caught too.
pub fn cli_verify_with(paths: &[PathBuf], genesis: Option<&str>) -> (bool, String) {
    let files = match paths {
        [base] => match discover_rotated(base) {
            Ok(f) => f,
            Err(e) => return (false, format!("FAILED: {}: {e}", base.display())),
        },
        _ => paths.to_vec(),
    };
    match verify(&files, genesis) {
        Ok(r) => (true, describe(&r, &files)),
        Err(e) => (false, format!("FAILED: {e}")),
    }
}

fn describe(r: &VerifyReport, files: &[PathBuf]) -> String {
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let (Some(first), Some(last), Some(hash)) = (r.first_seq, r.last_seq, &r.last_hash) else {
        return format!(
            "OK: no events in {} ({})",
            plural(r.files, "file"),
            names.join(", ")
        );
    };
    let mut out = format!(
        "OK: {} (seq {first}..{last}) in {} ({})\nlast hash: {hash}",
        plural_u64(r.events, "event"),
        plural(r.files, "file"),
        names.join(", ")
    );
    if first != 1 {
        out.push_str(&format!(
            "\nnote: the chain starts at seq {first}; earlier events are not in these files"
        ));
    } else if r.first_prev_hash.as_deref() != Some(DEFAULT_GENESIS) {
        out.push_str(&format!(
            "\nnote: the chain starts from a non-default genesis {}",
            r.first_prev_hash.as_deref().unwrap_or("")
        ));
    }
    out
}

fn plural(n: usize, what: &str) -> String {
    plural_u64(n as u64, what)
}

fn plural_u64(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
