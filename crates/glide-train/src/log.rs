//! The run's CSV log and its loss-curve plot (`plotters`).

use std::io::Write;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::TrainError;

/// One CSV row; held-out columns are filled on evaluation steps only.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRow {
    /// Steps completed when the row was written.
    pub step: usize,
    pub loss: f64,
    pub mse: f64,
    pub vb: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub images_per_s: f64,
    pub heldout_loss: Option<f64>,
    pub heldout_mse: Option<f64>,
    pub heldout_vb: Option<f64>,
    pub ema_heldout_loss: Option<f64>,
}

const HEADER: &str = "step,loss,mse,vb,grad_norm,lr,images_per_s,heldout_loss,heldout_mse,heldout_vb,ema_heldout_loss";

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:e}")).unwrap_or_default()
}

impl LogRow {
    fn to_csv(&self) -> String {
        format!(
            "{},{:e},{:e},{:e},{:e},{:e},{:.3},{},{},{},{}",
            self.step,
            self.loss,
            self.mse,
            self.vb,
            self.grad_norm,
            self.lr,
            self.images_per_s,
            opt(self.heldout_loss),
            opt(self.heldout_mse),
            opt(self.heldout_vb),
            opt(self.ema_heldout_loss)
        )
    }

    fn from_csv(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != 11 {
            return None;
        }
        let num = |i: usize| f[i].parse::<f64>().ok();
        Some(Self {
            step: f[0].parse().ok()?,
            loss: num(1)?,
            mse: num(2)?,
            vb: num(3)?,
            grad_norm: num(4)?,
            lr: num(5)?,
            images_per_s: num(6)?,
            heldout_loss: num(7),
            heldout_mse: num(8),
            heldout_vb: num(9),
            ema_heldout_loss: num(10),
        })
    }
}

/// `log.csv` in the run directory, append-only.
pub struct CsvLog {
    path: PathBuf,
    pub rows: Vec<LogRow>,
}

impl CsvLog {
    /// Opens the log for a run starting at `start_step`: rows written after that step by an
    /// interrupted run are dropped, so a resumed run's log equals an uninterrupted one's.
    pub fn open(path: &Path, start_step: usize) -> Result<Self, TrainError> {
        let io = |e| TrainError::Io(path.to_path_buf(), e);
        let rows: Vec<LogRow> = if start_step > 0 && path.exists() {
            std::fs::read_to_string(path)
                .map_err(io)?
                .lines()
                .skip(1)
                .filter_map(LogRow::from_csv)
                .filter(|r| r.step <= start_step)
                .collect()
        } else {
            Vec::new()
        };
        let mut text = format!("{HEADER}\n");
        for r in &rows {
            text.push_str(&r.to_csv());
            text.push('\n');
        }
        std::fs::write(path, text).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            rows,
        })
    }

    pub fn push(&mut self, row: LogRow) -> Result<(), TrainError> {
        let io = |e| TrainError::Io(self.path.clone(), e);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        writeln!(f, "{}", row.to_csv()).map_err(io)?;
        self.rows.push(row);
        Ok(())
    }

    /// Reads a log written by [`CsvLog`].
    pub fn read(path: &Path) -> Result<Vec<LogRow>, TrainError> {
        Ok(std::fs::read_to_string(path)
            .map_err(|e| TrainError::Io(path.to_path_buf(), e))?
            .lines()
            .skip(1)
            .filter_map(LogRow::from_csv)
            .collect())
    }
}

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system font for plot labels; returns false (plots without text) if none is found.
pub(crate) fn register_font() -> bool {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draws training loss (a running mean over `smooth` rows) and held-out losses against steps,
/// log-scaled, as a PNG titled `title` (e.g. [`crate::TrainConfig::loss_name`]).
pub fn plot_losses(rows: &[LogRow], path: &Path, title: &str) -> Result<(), String> {
    if rows.is_empty() {
        return Ok(());
    }
    let text = register_font();
    let smooth = (rows.len() / 50).max(1);
    let train: Vec<(f64, f64)> = rows
        .windows(smooth)
        .map(|w| {
            let m = w.iter().map(|r| r.loss).sum::<f64>() / w.len() as f64;
            (w[w.len() - 1].step as f64, m)
        })
        .collect();
    let held: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.heldout_loss.map(|l| (r.step as f64, l)))
        .collect();
    let ema: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.ema_heldout_loss.map(|l| (r.step as f64, l)))
        .collect();
    let all = train.iter().chain(&held).chain(&ema).map(|p| p.1);
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = (lo.max(1e-4) * 0.9, hi.max(lo * 1.01).max(1e-4) * 1.1);
    let x_max = rows.last().map_or(1.0, |r| r.step as f64).max(1.0);
    let root = BitMapBackend::new(path, (800, 480)).into_drawing_area();
    let e = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, (lo..hi).log_scale())
        .map_err(|x| e(&x))?;
    if text {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.3}"))
            .draw()
            .map_err(|x| e(&x))?;
    }
    let series = [
        (train, BLUE, "train (running mean)"),
        (held, RED, "held-out (live)"),
        (ema, GREEN, "held-out (EMA)"),
    ];
    for (points, colour, label) in series {
        if points.is_empty() {
            continue;
        }
        // Held-out losses are sparse: mark each evaluation as well.
        if label != "train (running mean)" {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(|x| e(&x))?;
        }
        let s = chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|x| e(&x))?;
        if text {
            s.label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
    }
    if text {
        draw_legend(&mut chart)?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// The series labels of `chart` in a framed box.
pub(crate) fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|x| x.to_string())
}
