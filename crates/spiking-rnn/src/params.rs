//! One flat parameter buffer per model, with SpikingJelly names and shapes.

use crate::{Error, Result};
use std::ops::Range;

/// One named tensor inside the flat buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    /// SpikingJelly/PyTorch `state_dict` key, e.g. `lstm.cells.0.linear_ih.weight`.
    pub name: String,
    /// The PyTorch shape, e.g. `[4H, I]` for `linear_ih.weight`.
    pub shape: Vec<usize>,
    pub offset: usize,
    /// Stored transposed (`[in, out]` for a `[out, in]` weight). Cells keep their weights this
    /// way so a one-hot input is a contiguous row and a spike vector selects contiguous rows.
    pub transposed: bool,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Builder and directory of the tensors of a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamLayout {
    pub specs: Vec<ParamSpec>,
    pub total: usize,
}

impl ParamLayout {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reserves a tensor and returns its range in the flat buffer.
    pub fn add(&mut self, name: String, shape: Vec<usize>, transposed: bool) -> Range<usize> {
        let spec = ParamSpec {
            name,
            shape,
            offset: self.total,
            transposed,
        };
        self.total += spec.len();
        let r = spec.range();
        self.specs.push(spec);
        r
    }

    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }

    /// The tensor in PyTorch layout (row-major in its PyTorch shape).
    pub fn export(&self, params: &[f32], spec: &ParamSpec) -> Vec<f32> {
        let src = &params[spec.range()];
        if !spec.transposed {
            return src.to_vec();
        }
        let (rows, cols) = (spec.shape[0], spec.shape[1]);
        let mut out = vec![0.0; src.len()];
        // stored [cols, rows] -> PyTorch [rows, cols]
        for c in 0..cols {
            for r in 0..rows {
                out[r * cols + c] = src[c * rows + r];
            }
        }
        out
    }

    /// Writes a tensor given in PyTorch layout; the shape must match exactly.
    pub fn import(
        &self,
        params: &mut [f32],
        name: &str,
        shape: &[usize],
        data: &[f32],
    ) -> Result<()> {
        let spec = self
            .get(name)
            .ok_or_else(|| Error::Params(format!("unexpected tensor '{name}'")))?;
        if spec.shape != shape || data.len() != spec.len() {
            return Err(Error::Params(format!(
                "tensor '{name}' has shape {shape:?}, the model needs {:?}",
                spec.shape
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::Params(format!(
                "tensor '{name}' holds a non-finite value at index {i}"
            )));
        }
        let dst = &mut params[spec.range()];
        if !spec.transposed {
            dst.copy_from_slice(data);
        } else {
            let (rows, cols) = (spec.shape[0], spec.shape[1]);
            for r in 0..rows {
                for c in 0..cols {
                    dst[c * rows + r] = data[r * cols + c];
                }
            }
        }
        Ok(())
    }

    /// Imports a full state dict: every tensor of the model must be given exactly once.
    pub fn import_all<'a>(
        &self,
        params: &mut [f32],
        tensors: impl IntoIterator<Item = (&'a str, &'a [usize], &'a [f32])>,
    ) -> Result<()> {
        let mut seen = vec![false; self.specs.len()];
        for (name, shape, data) in tensors {
            self.import(params, name, shape, data)?;
            if let Some(i) = self.specs.iter().position(|s| s.name == name) {
                seen[i] = true;
            }
        }
        let missing: Vec<&str> = self
            .specs
            .iter()
            .zip(&seen)
            .filter(|(_, s)| !**s)
            .map(|(p, _)| p.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::Params(format!(
                "missing tensors: {}",
                missing.join(", ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_round_trip() {
        let mut l = ParamLayout::new();
        l.add("w".into(), vec![2, 3], true);
        l.add("b".into(), vec![2], false);
        let mut p = vec![0.0; l.total];
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        l.import_all(
            &mut p,
            [
                ("w", &[2usize, 3][..], &w[..]),
                ("b", &[2][..], &[7.0, 8.0][..]),
            ],
        )
        .unwrap();
        assert_eq!(&p[..6], &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert_eq!(l.export(&p, &l.specs[0]), w.to_vec());
        assert!(l.import(&mut p, "w", &[3, 2], &w).is_err());
        assert!(l.import(&mut p, "x", &[2], &w[..2]).is_err());
        assert!(l.import(&mut p, "b", &[2], &[f32::NAN, 0.0]).is_err());
        assert!(l
            .import_all(&mut p, [("b", &[2usize][..], &[7.0, 8.0][..])])
            .is_err());
    }
}
