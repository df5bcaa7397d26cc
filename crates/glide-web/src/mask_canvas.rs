//! The editor's mask as the visitor paints it: round brush and eraser strokes, undo/redo, clear and
//! invert, on a square grid finer than the model's pixels. Plain data, so it is tested natively;
//! the page only forwards pointer positions and draws it.

use glide_pipeline::UserMask;

/// Undo steps kept.
pub const HISTORY: usize = 50;

/// A square paintable mask; `true` = regenerate.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskCanvas {
    pub res: usize,
    cells: Vec<bool>,
    undo: Vec<Vec<bool>>,
    redo: Vec<Vec<bool>>,
    last: Option<(f64, f64)>,
}

impl MaskCanvas {
    pub fn new(res: usize) -> Self {
        Self {
            res,
            cells: vec![false; res * res],
            undo: Vec::new(),
            redo: Vec::new(),
            last: None,
        }
    }

    pub fn cells(&self) -> &[bool] {
        &self.cells
    }

    pub fn is_empty(&self) -> bool {
        !self.cells.iter().any(|&c| c)
    }

    fn checkpoint(&mut self) {
        self.undo.push(self.cells.clone());
        if self.undo.len() > HISTORY {
            self.undo.remove(0);
        }
        self.redo.clear();
    }

    /// Starts a stroke at `(x, y)` (mask cells); one stroke is one undo step.
    pub fn begin(&mut self, x: f64, y: f64, radius: f64, erase: bool) {
        self.checkpoint();
        self.last = Some((x, y));
        self.stamp(x, y, radius, !erase);
    }

    /// Continues the stroke to `(x, y)`, filling the gap since the last position.
    pub fn extend(&mut self, x: f64, y: f64, radius: f64, erase: bool) {
        let Some((lx, ly)) = self.last else {
            return;
        };
        let dist = ((x - lx).powi(2) + (y - ly).powi(2)).sqrt();
        let n = (dist / (radius * 0.5).max(0.5)).ceil().max(1.0) as usize;
        for i in 1..=n {
            let f = i as f64 / n as f64;
            self.stamp(lx + (x - lx) * f, ly + (y - ly) * f, radius, !erase);
        }
        self.last = Some((x, y));
    }

    pub fn end(&mut self) {
        self.last = None;
    }

    pub fn is_drawing(&self) -> bool {
        self.last.is_some()
    }

    fn stamp(&mut self, cx: f64, cy: f64, r: f64, value: bool) {
        let r = r.max(0.5);
        let res = self.res as f64;
        let (y0, y1) = ((cy - r).floor().max(0.0), (cy + r).ceil().min(res - 1.0));
        let (x0, x1) = ((cx - r).floor().max(0.0), (cx + r).ceil().min(res - 1.0));
        if y1 < y0 || x1 < x0 {
            return;
        }
        for y in y0 as usize..=y1 as usize {
            for x in x0 as usize..=x1 as usize {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                if dx * dx + dy * dy <= r * r {
                    self.cells[y * self.res + x] = value;
                }
            }
        }
    }

    pub fn undo(&mut self) -> bool {
        match self.undo.pop() {
            Some(prev) => {
                self.redo.push(std::mem::replace(&mut self.cells, prev));
                true
            }
            None => false,
        }
    }

    pub fn redo(&mut self) -> bool {
        match self.redo.pop() {
            Some(next) => {
                self.undo.push(std::mem::replace(&mut self.cells, next));
                true
            }
            None => false,
        }
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    pub fn clear(&mut self) {
        self.checkpoint();
        self.cells.fill(false);
    }

    pub fn invert(&mut self) {
        self.checkpoint();
        for c in &mut self.cells {
            *c = !*c;
        }
    }

    /// Replaces the whole mask (a loaded mask file at this resolution) as one undo step.
    pub fn set(&mut self, mask: &UserMask) {
        assert_eq!((mask.width, mask.height), (self.res, self.res));
        self.checkpoint();
        self.cells.clone_from(&mask.regenerate);
    }

    pub fn to_user_mask(&self) -> UserMask {
        UserMask {
            width: self.res,
            height: self.res,
            regenerate: self.cells.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stroke_paints_a_connected_line_and_erasing_removes_it() {
        let mut m = MaskCanvas::new(64);
        m.begin(4.0, 32.0, 3.0, false);
        m.extend(60.0, 32.0, 3.0, false);
        m.end();
        // every cell along the row is painted: no gaps between pointer events
        assert!((4..60).all(|x| m.cells()[32 * 64 + x]));
        assert!(!m.cells()[10 * 64 + 30]);
        m.begin(30.0, 32.0, 6.0, true);
        m.end();
        assert!(!m.cells()[32 * 64 + 30]);
        assert!(m.cells()[32 * 64 + 50]);
    }

    #[test]
    fn undo_redo_clear_invert() {
        let mut m = MaskCanvas::new(16);
        assert!(!m.undo());
        m.begin(8.0, 8.0, 2.0, false);
        m.end();
        let painted = m.cells().to_vec();
        m.clear();
        assert!(m.is_empty());
        assert!(m.undo());
        assert_eq!(m.cells(), painted);
        assert!(m.undo());
        assert!(m.is_empty());
        assert!(m.redo());
        assert_eq!(m.cells(), painted);
        m.invert();
        assert!(m.cells().iter().zip(&painted).all(|(a, b)| a != b));
        // a new action drops the redo history
        m.undo();
        m.begin(1.0, 1.0, 1.0, false);
        assert!(!m.can_redo());
        let um = m.to_user_mask();
        assert_eq!((um.width, um.height), (16, 16));
        assert!(!um.is_empty());
    }
}
