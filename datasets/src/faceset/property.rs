//! The `property` file: one line `num_classes,height,width`.

use crate::error::{DataError, Result};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Property {
    pub classes: u32,
    pub height: u32,
    pub width: u32,
}

impl Property {
    pub fn read(path: &Path) -> Result<Property> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Property::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Property> {
        let bad = |detail: String| DataError::BadLine { path: path.to_path_buf(), line: 1, detail };
        let line = text.lines().next().unwrap_or("").trim();
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 3 {
            return Err(bad(format!("expected `classes,height,width`, found {line:?}")));
        }
        let num = |s: &str, what: &str| -> Result<u32> {
            match s.parse::<u32>() {
                Ok(v) if v > 0 => Ok(v),
                _ => Err(bad(format!("{what} {s:?} is not a positive integer"))),
            }
        };
        Ok(Property {
            classes: num(fields[0], "classes")?,
            height: num(fields[1], "height")?,
            width: num(fields[2], "width")?,
        })
    }

    /// Writes `classes,height,width\n` through a temporary file.
    pub fn write(&self, path: &Path) -> Result<()> {
        let tmp = crate::recordio::temp_name(path);
        std::fs::write(&tmp, format!("{},{},{}\n", self.classes, self.height, self.width))
            .map_err(|e| DataError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let p = Path::new("property");
        assert_eq!(
            Property::parse("85742,112,112", p).unwrap(),
            Property { classes: 85742, height: 112, width: 112 }
        );
        assert_eq!(Property::parse(" 3, 8 ,9\n", p).unwrap().width, 9);
        for bad in ["", "1,2", "a,112,112", "0,112,112", "1,2,3,4", "-1,2,3"] {
            let e = Property::parse(bad, p).unwrap_err().to_string();
            assert!(e.starts_with("property:1:"), "{bad:?}: {e}");
        }
    }
}
