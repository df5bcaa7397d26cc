//! A training run killed with SIGKILL (`kill -9`) at random moments, once in the middle of writing
//! its checkpoint, then continued with `--resume`, ends with exactly the weights, EMA, optimiser
//! state and loss curve of a run that was never interrupted (flex is deterministic).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use glide_train::checkpoint::{Checkpoint, checkpoint_path};
use glide_train::log::CsvLog;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("glide-kill-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Twelve captioned pictures of coloured shapes, and the smoke config training on them.
fn setup(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (ci, (name, rgb)) in [("red", [220u8, 30, 30]), ("blue", [40, 60, 220])]
        .iter()
        .enumerate()
    {
        for (si, shape) in ["circle", "square", "bar"].iter().enumerate() {
            let img = image::RgbImage::from_fn(16, 16, |x, y| {
                let (dx, dy) = (x as f32 - 7.5, y as f32 - 7.5);
                let inside = match si {
                    0 => dx * dx + dy * dy < 36.0,
                    1 => dx.abs() < 5.0 && dy.abs() < 5.0,
                    _ => dy.abs() < 2.0,
                };
                image::Rgb(if inside { *rgb } else { [255, 255, 255] })
            });
            let stem = data.join(format!("{ci}-{si}"));
            img.save(stem.with_extension("png")).unwrap();
            std::fs::write(stem.with_extension("txt"), format!("a {name} {shape}")).unwrap();
        }
    }
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/smoke.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(smoke).unwrap()).unwrap();
    cfg["data"]["shards"] = serde_json::Value::Null;
    cfg["data"]["folder"] = data.to_string_lossy().into();
    cfg["data"]["heldout_fraction"] = 0.2.into();
    cfg["steps"] = 16.into();
    cfg["checkpoint_every"] = 2.into();
    cfg["eval_every"] = 4.into();
    cfg["sample_every"] = 0.into();
    let path = dir.join("config.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    path
}

fn train(config: &Path, out: &Path, resume: bool, pause_ms: Option<u64>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_glide"));
    cmd.arg("train")
        .arg("--config")
        .arg(config)
        .arg("--out-dir")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if resume {
        cmd.arg("--resume");
    }
    if let Some(ms) = pause_ms {
        cmd.env("GLIDE_TEST_PAUSE_MID_WRITE_MS", ms.to_string());
    }
    cmd.spawn().expect("the glide binary starts")
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "waited 5 min for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILL, as `kill -9` sends it (`Child::kill` on Unix), and the process reaped.
fn kill_9(mut child: Child) {
    let _ = child.kill();
    child.wait().unwrap();
}

fn finish(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "glide train failed: {out:?}");
}

#[test]
fn a_run_killed_at_random_moments_resumes_to_bit_identical_weights() {
    let dir = scratch("runs");
    let config = setup(&dir);
    let (straight, killed) = (dir.join("straight"), dir.join("killed"));
    finish(train(&config, &straight, false, None));

    // 1. Killed while writing its second checkpoint: the first one must survive intact.
    let ckpt = checkpoint_path(&killed);
    let tmp = ckpt.with_file_name("checkpoint.safetensors.tmp");
    let child = train(&config, &killed, false, Some(400));
    wait_for("a first checkpoint and a second being written", || {
        ckpt.exists() && tmp.exists()
    });
    kill_9(child);
    let first = Checkpoint::load(&ckpt).expect("the last complete checkpoint loads");
    assert!(first.step >= 2, "step {}", first.step);

    // 2. Killed twice more at a random moment after it has taken a step (clock-seeded: each run
    //    of the test differs), the stale temporary file of the torn write still there the first time.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let logged_steps = || {
        std::fs::read_to_string(killed.join("log.csv"))
            .map(|t| {
                t.lines()
                    .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
                    .count()
            })
            .unwrap_or(0)
    };
    for round in 0..2u64 {
        let from = Checkpoint::load(&ckpt).unwrap().step;
        // Rows past the checkpoint, left by the killed run, go when the resumed run opens the log.
        let stale = logged_steps().max(from);
        let child = train(&config, &killed, true, None);
        wait_for("a step after the resume", || logged_steps() > stale);
        let delay = (seed.wrapping_mul(round + 7) >> 3) % 400;
        std::thread::sleep(Duration::from_millis(delay));
        kill_9(child);
        let at = Checkpoint::load(&ckpt).unwrap().step;
        eprintln!("round {round}: resumed at step {from}, killed {delay} ms after a step, at {at}");
        assert!(at < 16, "the run finished before it was killed");
    }
    finish(train(&config, &killed, true, None));

    let a = Checkpoint::load(&checkpoint_path(&straight)).unwrap();
    let b = Checkpoint::load(&ckpt).unwrap();
    assert_eq!((a.step, b.step), (16, 16));
    for (name, x, y) in [("model", &a.model, &b.model), ("ema", &a.ema, &b.ema)] {
        assert_eq!(x.tensors.len(), y.tensors.len());
        for (k, v) in &x.tensors {
            assert_eq!(
                v, &y.tensors[k],
                "{name} {k} differs after kill -9 and resume"
            );
        }
    }
    assert_eq!(a.optim.len(), b.optim.len());
    for (k, v) in &a.optim {
        assert_eq!(v, &b.optim[k], "{k}");
    }
    assert_eq!(a.optim_times, b.optim_times);
    let read = |d: &Path| {
        let mut rows = CsvLog::read(&d.join("log.csv")).unwrap();
        rows.iter_mut().for_each(|r| r.images_per_s = 0.0);
        rows
    };
    let (la, lb) = (read(&straight), read(&killed));
    assert_eq!(la.len(), 16);
    assert_eq!(la, lb, "the loss curves differ");
}

/// SIGTERM (a job scheduler's stop, `kill PID`) ends a run as Ctrl-C does: the step in flight
/// finishes, is evaluated, and a checkpoint is written at it, so no step is lost.
#[test]
fn sigterm_stops_a_run_with_a_checkpoint_at_the_step_it_reached() {
    let dir = scratch("sigterm");
    let config = setup(&dir);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    // No periodic checkpoint or evaluation: whatever the run leaves comes from the signal.
    cfg["steps"] = 10_000.into();
    cfg["checkpoint_every"] = 100_000.into();
    cfg["eval_every"] = 100_000.into();
    std::fs::write(&config, cfg.to_string()).unwrap();
    let out = dir.join("run");
    let child = Command::new(env!("CARGO_BIN_EXE_glide"))
        .args(["train", "--config"])
        .arg(&config)
        .arg("--out-dir")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the glide binary starts");
    let rows = || CsvLog::read(&out.join("log.csv")).map_or(0, |r| r.len());
    wait_for("three logged steps", || rows() >= 3);
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "SIGTERM is a clean stop: {stderr}");
    assert!(stderr.contains("stop asked"), "{stderr}");
    let ckpt = Checkpoint::load(&checkpoint_path(&out)).expect("SIGTERM writes a checkpoint");
    let log = CsvLog::read(&out.join("log.csv")).unwrap();
    assert!(
        (3..10_000).contains(&ckpt.step),
        "stopped at step {}",
        ckpt.step
    );
    assert_eq!(
        log.len(),
        ckpt.step,
        "one log row per step, up to the checkpoint"
    );
    let last = log.last().unwrap();
    assert_eq!(last.step, ckpt.step);
    assert!(
        last.heldout_loss.is_some() && last.ema_heldout_loss.is_some(),
        "the step it stopped on is evaluated: {last:?}"
    );
    assert!(
        stderr.contains(&format!("stopped at step {}", ckpt.step)),
        "{stderr}"
    );
}
