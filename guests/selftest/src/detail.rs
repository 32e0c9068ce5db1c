//! [`Detail`]: a fixed-capacity text buffer for a failed check's explanation
//! (the guests have no allocator). Text beyond the capacity is cut and marked.

use core::fmt;

/// Capacity of a [`Detail`] in bytes.
pub const DETAIL_CAPACITY: usize = 240;
/// Appended when text was cut.
const CUT_MARK: &str = "...";

/// Why a check failed.
#[derive(Clone)]
pub struct Detail {
    buf: [u8; DETAIL_CAPACITY],
    len: usize,
    cut: bool,
}

impl Detail {
    /// An empty detail.
    pub const fn new() -> Self {
        Self {
            buf: [0; DETAIL_CAPACITY],
            len: 0,
            cut: false,
        }
    }

    /// A detail holding the formatted `args`.
    pub fn from_args(args: fmt::Arguments<'_>) -> Self {
        let mut d = Self::new();
        let _ = fmt::Write::write_fmt(&mut d, args);
        d
    }

    /// The text so far (without the cut mark).
    pub fn as_str(&self) -> &str {
        // Only whole UTF-8 characters are ever copied in (see `write_str`).
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<invalid utf-8>")
    }

    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.cut
    }

    /// Appends `; ` (if not empty) and the formatted `args`.
    pub fn append(&mut self, args: fmt::Arguments<'_>) {
        if !self.is_empty() {
            let _ = fmt::Write::write_str(self, "; ");
        }
        let _ = fmt::Write::write_fmt(self, args);
    }
}

impl Default for Detail {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Write for Detail {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        let room = DETAIL_CAPACITY - self.len;
        let mut take = s.len().min(room);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.buf[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.cut = true;
        }
        Ok(())
    }
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.cut {
            f.write_str(CUT_MARK)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Detail({self})")
    }
}

/// Builds a [`Detail`] from format arguments.
#[macro_export]
macro_rules! detail {
    ($($arg:tt)*) => {
        $crate::detail::Detail::from_args(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_appends() {
        let mut d = crate::detail!("x{} = {:#x}", 4, 0x10);
        assert_eq!(d.to_string(), "x4 = 0x10");
        d.append(format_args!("second"));
        assert_eq!(d.to_string(), "x4 = 0x10; second");
        let mut e = Detail::new();
        assert!(e.is_empty());
        e.append(format_args!("only"));
        assert_eq!(e.to_string(), "only");
    }

    #[test]
    fn cuts_long_text_on_char_boundaries() {
        let long = "é".repeat(DETAIL_CAPACITY); // 2 bytes each
        let d = Detail::from_args(format_args!("{long}"));
        assert_eq!(d.as_str().len(), DETAIL_CAPACITY);
        assert!(d.to_string().ends_with("é..."));
        let odd = Detail::from_args(format_args!("a{long}"));
        assert_eq!(odd.as_str().len(), DETAIL_CAPACITY - 1);
        assert!(!odd.is_empty());
    }
}
