//! Runs QEMU under a hard timeout and captures its output as a log.
//!
//! QEMU is spawned in its own process group with stdin closed, so it never
//! waits for input, and the whole group is killed on a timeout or an early
//! stop. Its stdout and stderr are read by two threads and reassembled into
//! lines here; each line goes to the log file (and, if asked, the raw bytes
//! to the terminal) as soon as it arrives.

use crate::qemu::QemuCommand;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// How long QEMU keeps running after the stop line appeared, so that the
/// rest of the message (often on the following lines) reaches the log.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(1);

/// How long output is still collected after QEMU was killed.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Process groups of the QEMU instances running now, for [`kill_all`].
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// How to run one QEMU instance.
#[derive(Clone, Debug)]
pub struct RunOptions<'a> {
    /// Kill QEMU after this long; `None` waits for ever.
    pub timeout: Option<Duration>,
    /// Stop early: once a line containing this text appears, QEMU is killed
    /// (after `stop_grace`) and the run counts as finished.
    pub stop_on: Option<&'a str>,
    /// Delay between the stop line and the kill.
    pub stop_grace: Duration,
    /// Where to write the log (created, with its folder; truncated).
    pub log_path: Option<&'a Path>,
    /// Copy QEMU's output to this process's stdout/stderr as it arrives.
    pub echo: bool,
    /// Type `bytes` on QEMU's console once a line containing `trigger`
    /// appears: `(trigger, bytes)`.
    pub input: Option<(&'a str, &'a [u8])>,
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions {
            timeout: None,
            stop_on: None,
            stop_grace: DEFAULT_STOP_GRACE,
            log_path: None,
            echo: false,
            input: None,
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited by itself with this code (`None`: killed by a signal
    /// that the harness did not send).
    Exited(Option<i32>),
    /// The stop line appeared and the harness killed QEMU.
    StoppedEarly,
    /// The timeout expired and the harness killed QEMU.
    TimedOut(Duration),
}

/// The result of [`run`].
#[derive(Clone, Debug)]
pub struct RunOutcome {
    /// How the run ended.
    pub ending: Ending,
    /// Every output line, stdout and stderr interleaved as they arrived,
    /// without line terminators.
    pub lines: Vec<String>,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
}

/// Which pipe a chunk came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

enum Event {
    Data(Stream, Vec<u8>),
    Closed,
}

/// Runs `command` to completion, timeout or early stop.
///
/// # Errors
/// When QEMU cannot be spawned or the log file cannot be written.
pub fn run(command: &QemuCommand, options: &RunOptions<'_>) -> io::Result<RunOutcome> {
    let mut log = match options.log_path {
        Some(path) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = BufWriter::new(File::create(path)?);
            writeln!(file, "$ {command}")?;
            Some(file)
        }
        None => None,
    };
    let start = Instant::now();
    let mut child = command
        .to_command()
        .stdin(if options.input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", command.program)))?;
    let pid = child.id() as i32;
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(pid);

    let (sender, receiver) = mpsc::channel();
    let readers = [
        spawn_reader(child.stdout.take(), Stream::Stdout, sender.clone()),
        spawn_reader(child.stderr.take(), Stream::Stderr, sender),
    ];
    let mut capture = Capture::new(options);
    let stdin = child.stdin.take();
    let result = capture.pump(&receiver, &mut child, pid, start, options, log.as_mut(), stdin);
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let status = child.wait();
    RUNNING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&p| p != pid);
    let elapsed = start.elapsed();
    let killed_by_us = result?;
    capture.finish(log.as_mut())?;
    if let Some(file) = log.as_mut() {
        file.flush()?;
    }
    let ending = match killed_by_us {
        Some(ending) => ending,
        None => Ending::Exited(status?.code()),
    };
    Ok(RunOutcome {
        ending,
        lines: capture.lines,
        elapsed,
    })
}

/// Kills every QEMU instance [`run`] started that is still running (for a
/// Ctrl-C handler: the instances live in their own process groups and do
/// not see the terminal's signal).
pub fn kill_all() {
    let running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    for &pid in running.iter() {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn spawn_reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    stream: Stream,
    sender: Sender<Event>,
) -> Option<thread::JoinHandle<()>> {
    let mut pipe = pipe?;
    Some(thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if sender.send(Event::Data(stream, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = sender.send(Event::Closed);
    }))
}

fn kill_group(child: &mut Child, pid: i32) {
    if killpg(Pid::from_raw(pid), Signal::SIGKILL).is_err() {
        let _ = child.kill();
    }
}

/// Line reassembly and stop-line detection for one run.
struct Capture<'a> {
    stop_on: Option<&'a str>,
    stop_at: Option<Instant>,
    pending: [Vec<u8>; 2],
    lines: Vec<String>,
}

impl<'a> Capture<'a> {
    fn new(options: &RunOptions<'a>) -> Self {
        Capture {
            stop_on: options.stop_on,
            stop_at: None,
            pending: [Vec::new(), Vec::new()],
            lines: Vec::new(),
        }
    }

    /// Reads events until both pipes close, the timeout expires or the stop
    /// line's grace period ends. Returns the ending when the harness killed
    /// QEMU, `None` when QEMU ended by itself.
    #[allow(clippy::too_many_arguments, reason = "one caller; the pieces of one running QEMU")]
    fn pump(
        &mut self,
        receiver: &Receiver<Event>,
        child: &mut Child,
        pid: i32,
        start: Instant,
        options: &RunOptions<'_>,
        mut log: Option<&mut BufWriter<File>>,
        mut stdin: Option<std::process::ChildStdin>,
    ) -> io::Result<Option<Ending>> {
        let deadline = options.timeout.map(|t| start + t);
        let mut open_pipes = 2;
        let mut killed = None;
        let mut drain_until = None;
        while open_pipes > 0 {
            let wake = match drain_until {
                Some(until) => Some(until),
                None => [deadline, self.stop_at].into_iter().flatten().min(),
            };
            let event = match wake {
                Some(at) => receiver.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => receiver.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(Event::Data(stream, bytes)) => {
                    if options.echo {
                        echo(stream, &bytes);
                    }
                    self.push(stream, &bytes, options.stop_grace, log.as_deref_mut())?;
                    if let Some((trigger, input)) = options.input
                        && stdin.is_some()
                        && self.lines.iter().any(|line| line.contains(trigger))
                        && let Some(mut pipe) = stdin.take()
                    {
                        // A failed write (QEMU gone) shows in the log as missing output.
                        let _ = pipe.write_all(input).and_then(|()| pipe.flush());
                        // Keep the pipe open: QEMU would see end-of-file.
                        std::mem::forget(pipe);
                    }
                }
                Ok(Event::Closed) => open_pipes -= 1,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if drain_until.is_some_and(|d| now >= d) {
                        break;
                    }
                    if killed.is_none() {
                        if self.stop_at.is_some_and(|s| now >= s) {
                            killed = Some(Ending::StoppedEarly);
                        } else if let (Some(d), Some(t)) = (deadline, options.timeout)
                            && now >= d
                        {
                            killed = Some(Ending::TimedOut(t));
                        }
                        if killed.is_some() {
                            kill_group(child, pid);
                            drain_until = Some(now + DRAIN_LIMIT);
                            self.stop_at = None;
                        }
                    }
                }
            }
        }
        if let Some(Ending::TimedOut(t)) = &killed
            && let Some(file) = log
        {
            writeln!(
                file,
                "[harness] timed out after {} s; QEMU killed",
                t.as_secs()
            )?;
        }
        Ok(killed)
    }

    fn push(
        &mut self,
        stream: Stream,
        bytes: &[u8],
        grace: Duration,
        mut log: Option<&mut BufWriter<File>>,
    ) -> io::Result<()> {
        let index = usize::from(stream == Stream::Stderr);
        self.pending[index].extend_from_slice(bytes);
        while let Some(newline) = self.pending[index].iter().position(|&b| b == b'\n') {
            let rest = self.pending[index].split_off(newline + 1);
            let line = std::mem::replace(&mut self.pending[index], rest);
            self.add_line(&line, grace, log.as_deref_mut())?;
        }
        if let Some(file) = log {
            file.flush()?;
        }
        Ok(())
    }

    fn add_line(
        &mut self,
        raw: &[u8],
        grace: Duration,
        log: Option<&mut BufWriter<File>>,
    ) -> io::Result<()> {
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches(['\n', '\r']).to_string();
        if let Some(file) = log {
            writeln!(file, "{line}")?;
        }
        if self.stop_at.is_none()
            && let Some(stop) = self.stop_on
            && line.contains(stop)
        {
            self.stop_at = Some(Instant::now() + grace);
        }
        self.lines.push(line);
        Ok(())
    }

    /// Turns unterminated output into a last line.
    fn finish(&mut self, mut log: Option<&mut BufWriter<File>>) -> io::Result<()> {
        for index in 0..2 {
            let rest = std::mem::take(&mut self.pending[index]);
            if !rest.is_empty() {
                self.add_line(&rest, Duration::ZERO, log.as_deref_mut())?;
            }
        }
        Ok(())
    }
}

fn echo(stream: Stream, bytes: &[u8]) {
    // A closed terminal must not stop the run: errors are ignored.
    let _ = match stream {
        Stream::Stdout => {
            let mut out = io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        Stream::Stderr => io::stderr().lock().write_all(bytes),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn shell(script: &str) -> QemuCommand {
        QemuCommand {
            program: "sh".into(),
            args: vec![OsString::from("-c"), OsString::from(script)],
        }
    }

    #[test]
    fn exit_code_and_lines_are_captured_from_both_streams() {
        let dir = std::env::temp_dir().join(format!("bulkhead-harness-{}", std::process::id()));
        let log = dir.join("run.log");
        let options = RunOptions {
            timeout: Some(Duration::from_secs(20)),
            log_path: Some(&log),
            ..Default::default()
        };
        let outcome = run(
            &shell("printf 'one\\r\\ntwo\\n'; echo err >&2; printf tail; exit 3"),
            &options,
        )
        .unwrap();
        assert_eq!(outcome.ending, Ending::Exited(Some(3)));
        let mut lines = outcome.lines.clone();
        lines.sort();
        assert_eq!(lines, ["err", "one", "tail", "two"]);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.starts_with("$ sh -c"), "{text}");
        assert!(text.contains("one\ntwo\n"), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_hung_process_is_killed_at_the_timeout() {
        let options = RunOptions {
            timeout: Some(Duration::from_millis(300)),
            ..Default::default()
        };
        let outcome = run(&shell("echo started; sleep 30 & wait"), &options).unwrap();
        assert_eq!(outcome.ending, Ending::TimedOut(Duration::from_millis(300)));
        assert_eq!(outcome.lines, ["started"]);
        assert!(
            outcome.elapsed < Duration::from_secs(10),
            "the whole group was killed"
        );
    }

    #[test]
    fn the_stop_line_ends_the_run_after_the_grace_period() {
        let options = RunOptions {
            timeout: Some(Duration::from_secs(20)),
            stop_on: Some("boot: error"),
            stop_grace: Duration::from_millis(300),
            ..Default::default()
        };
        let script = "echo 'x boot: error: y'; echo detail; sleep 30";
        let outcome = run(&shell(script), &options).unwrap();
        assert_eq!(outcome.ending, Ending::StoppedEarly);
        assert_eq!(outcome.lines, ["x boot: error: y", "detail"]);
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let command = QemuCommand {
            program: "bulkhead-no-such-qemu".into(),
            args: Vec::new(),
        };
        let err = run(&command, &RunOptions::default()).unwrap_err();
        assert!(err.to_string().contains("bulkhead-no-such-qemu"), "{err}");
    }
}
