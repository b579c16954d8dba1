//! Masking in the result stream: DataRow and RowDescription messages of a statement the
//! policy forwards unrewritten with [`RowMasks`] (see `pgveil_policy::output`).
//!
//! A masked column reads as the rewrite would show it: the masked value, and in the row
//! description no source table or column, and type `text` (or the column's own type for
//! `null`). Everything else of the message is copied as received.

use std::sync::Arc;

use pgveil_policy::mask::MaskKey;
use pgveil_policy::output::RowMasks;

use crate::wire::cursor::{Cursor, Malformed};
use crate::wire::messages::encode;

/// `text`'s type OID.
const TEXT_OID: i32 = 25;
/// `varchar`'s type OID.
const VARCHAR_OID: i32 = 1043;

/// Why a masked result cannot be masked as planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    #[error(transparent)]
    Malformed(#[from] Malformed),
    /// The RowDescription does not match the catalog the masks were planned from (the
    /// table changed since it was read): the session is closed rather than guess.
    #[error("the columns of a masked result do not match pgveil's catalog")]
    StaleColumns,
}

/// Appends the masked DataRow (a whole message) for `body` to `out`. A row whose
/// column count is not the statement's is an error: the masks would miss their columns.
pub fn data_row(
    body: &[u8],
    masks: &RowMasks,
    key: &MaskKey,
    out: &mut Vec<u8>,
) -> Result<(), Malformed> {
    let mut c = Cursor::new(body, "DataRow");
    let n = c.i16()?;
    if usize::try_from(n).ok() != Some(masks.width) {
        return Err(Malformed("DataRow with an unexpected number of columns"));
    }
    // Masked values are about as long as the raw ones: one allocation per row at most.
    out.reserve(body.len() + 5 + 16 * masks.columns.len());
    let mut next = masks.columns.iter().peekable();
    let mut result = Ok(());
    encode(out, b'D', |b| {
        b.extend_from_slice(&n.to_be_bytes());
        for i in 0..masks.width {
            let len = match c.i32() {
                Ok(l) => l,
                Err(e) => {
                    result = Err(e);
                    return;
                }
            };
            let value = if len < 0 {
                None
            } else {
                match c.take(len as usize) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        result = Err(e);
                        return;
                    }
                }
            };
            let mask = next.next_if(|m| m.index == i);
            match (value, mask) {
                (None, _) => b.extend_from_slice(&(-1i32).to_be_bytes()),
                (Some(v), None) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                (Some(v), Some(m)) => {
                    let len_at = b.len();
                    b.extend_from_slice(&[0; 4]);
                    if m.mask.apply(v, key, b) {
                        let len = (b.len() - len_at - 4) as i32;
                        b[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
                    } else {
                        b.truncate(len_at);
                        b.extend_from_slice(&(-1i32).to_be_bytes());
                    }
                }
            }
        }
        if !c.is_empty() {
            result = Err(Malformed("DataRow with trailing bytes"));
        }
    });
    result
}

/// Appends the RowDescription (a whole message) for `body` to `out`, with the masked
/// columns described as the rewrite would describe them.
///
/// The message keeps its length (only fixed-size fields change), so it is copied once
/// and the masked fields are patched in place. The description must match the catalog
/// the masks were planned from: the names of the columns a `*` expanded, and a text or
/// varchar type under a mask that reads text ([`MaskError::StaleColumns`] otherwise, also for another column count).
pub fn row_description(body: &[u8], masks: &RowMasks, out: &mut Vec<u8>) -> Result<(), MaskError> {
    let mut c = Cursor::new(body, "RowDescription");
    let n = c.i16()?;
    if usize::try_from(n).ok() != Some(masks.width) {
        // A column added or dropped behind the proxy.
        return Err(MaskError::StaleColumns);
    }
    let start = out.len();
    out.reserve(body.len() + 5);
    encode(out, b'T', |b| b.extend_from_slice(body));
    let fields = start + 5;
    let patched = (|| {
        let mut next = masks.columns.iter().peekable();
        let mut expanded = masks.expanded.iter().peekable();
        for i in 0..masks.width {
            let name = c.cstr()?;
            if let Some((_, want)) = expanded.next_if(|(at, _)| *at == i) {
                if name != want.as_bytes() {
                    return Err(MaskError::StaleColumns);
                }
            }
            // table OID (4), attnum (2), type OID (4), type length (2), typmod (4), format (2)
            let at = fields + (body.len() - c.remaining().len());
            c.take(18)?;
            if let Some(m) = next.next_if(|m| m.index == i) {
                let f = &mut out[at..at + 18];
                let type_oid = i32::from_be_bytes([f[6], f[7], f[8], f[9]]);
                if m.mask.reads_text() && type_oid != TEXT_OID && type_oid != VARCHAR_OID {
                    return Err(MaskError::StaleColumns);
                }
                f[..6].fill(0);
                if !m.mask.keeps_type() {
                    f[6..10].copy_from_slice(&TEXT_OID.to_be_bytes());
                    f[10..12].copy_from_slice(&(-1i16).to_be_bytes());
                    f[12..16].copy_from_slice(&(-1i32).to_be_bytes());
                }
            }
        }
        if c.is_empty() {
            Ok(())
        } else {
            Err(Malformed("RowDescription with trailing bytes").into())
        }
    })();
    if patched.is_err() {
        out.truncate(start);
    }
    patched
}

/// The last RowDescription a session masked, with its result: a statement run again
/// gets the same description from the server, so it is copied instead of patched anew.
#[derive(Default)]
pub struct DescriptionMemo {
    masks: Option<Arc<RowMasks>>,
    body: Vec<u8>,
    message: Vec<u8>,
}

impl DescriptionMemo {
    /// [`row_description`] of `body` under `masks`, from the memo when both are the
    /// last ones seen (the same masks by identity, the same bytes).
    pub fn describe(
        &mut self,
        body: &[u8],
        masks: &Arc<RowMasks>,
        out: &mut Vec<u8>,
    ) -> Result<(), MaskError> {
        let same = self.masks.as_ref().is_some_and(|m| Arc::ptr_eq(m, masks));
        if !same || self.body != body {
            self.masks = None;
            self.message.clear();
            row_description(body, masks, &mut self.message)?;
            self.body.clear();
            self.body.extend_from_slice(body);
            self.masks = Some(masks.clone());
        }
        out.extend_from_slice(&self.message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgveil_policy::output::{ColumnMask, ValueMask};

    fn masks() -> RowMasks {
        RowMasks {
            width: 3,
            columns: vec![
                ColumnMask {
                    index: 1,
                    mask: ValueMask::Partial {
                        keep_first: 3,
                        keep_last: 4,
                        fill: "*".into(),
                    },
                },
                ColumnMask {
                    index: 2,
                    mask: ValueMask::Null,
                },
            ],
            expanded: Vec::new(),
        }
    }

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = (values.len() as i16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b
    }

    #[test]
    fn masks_only_the_planned_columns() {
        let body = row(&[Some(b"7"), Some(b"13812345678"), Some(b"secret")]);
        let mut out = Vec::new();
        data_row(&body, &masks(), &MaskKey::new(b"k"), &mut out).expect("well formed");
        let expected = row(&[Some(b"7"), Some(b"138****5678"), None]);
        assert_eq!(out[0], b'D');
        assert_eq!(&out[5..], expected.as_slice());
        assert_eq!(
            u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize,
            expected.len() + 4
        );
    }

    #[test]
    fn nulls_stay_null_and_bad_rows_are_errors() {
        let body = row(&[None, None, None]);
        let mut out = Vec::new();
        data_row(&body, &masks(), &MaskKey::new(b"k"), &mut out).expect("well formed");
        assert_eq!(&out[5..], body.as_slice());
        let short = row(&[Some(b"1"), Some(b"2")]);
        assert!(data_row(&short, &masks(), &MaskKey::new(b"k"), &mut Vec::new()).is_err());
        let mut cut = row(&[Some(b"1"), Some(b"2"), Some(b"3")]);
        cut.pop();
        assert!(data_row(&cut, &masks(), &MaskKey::new(b"k"), &mut Vec::new()).is_err());
    }

    /// A RowDescription body of `(name, type OID)` fields.
    fn description(fields: &[(&str, i32)]) -> Vec<u8> {
        let mut body = (fields.len() as i16).to_be_bytes().to_vec();
        for (name, oid) in fields {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&16384i32.to_be_bytes());
            body.extend_from_slice(&2i16.to_be_bytes());
            body.extend_from_slice(&oid.to_be_bytes());
            body.extend_from_slice(&(-1i16).to_be_bytes());
            body.extend_from_slice(&24i32.to_be_bytes());
            body.extend_from_slice(&0i16.to_be_bytes());
        }
        body
    }

    #[test]
    fn a_description_that_does_not_match_the_catalog_is_refused() {
        let mut m = masks();
        m.expanded = vec![(0, "id".into()), (1, "phone".into()), (2, "id_card".into())];
        let ok = description(&[("id", 20), ("phone", 1043), ("id_card", 25)]);
        let mut out = Vec::new();
        row_description(&ok, &m, &mut out).expect("matches");
        // A column dropped and another added: same width, shifted names.
        let shifted = description(&[("id", 20), ("id_card", 1043), ("note", 25)]);
        let mut out = Vec::new();
        assert_eq!(
            row_description(&shifted, &m, &mut out),
            Err(MaskError::StaleColumns)
        );
        assert!(out.is_empty());
        // The partial-masked column is no longer text (its binary form is not UTF-8).
        let retyped = description(&[("id", 20), ("phone", 20), ("id_card", 25)]);
        assert_eq!(
            row_description(&retyped, &m, &mut Vec::new()),
            Err(MaskError::StaleColumns)
        );
        // `null` keeps any type; names are only checked where `*` expanded.
        let m = masks();
        let other = description(&[("a", 20), ("phone", 25), ("b", 1184)]);
        row_description(&other, &m, &mut Vec::new()).expect("explicit columns");
    }

    #[test]
    fn description_hides_source_and_type_of_masked_columns() {
        let body = description(&[("id", 1043), ("phone", 1043), ("id_card", 1043)]);
        let mut out = Vec::new();
        row_description(&body, &masks(), &mut out).expect("well formed");
        let mut c = Cursor::new(&out[5..], "test");
        assert_eq!(c.i16().expect("count"), 3);
        let mut fields = Vec::new();
        for _ in 0..3 {
            c.cstr().expect("name");
            let table = c.i32().expect("table");
            c.i16().expect("attnum");
            let oid = c.i32().expect("type");
            c.take(8).expect("rest");
            fields.push((table, oid));
        }
        let field = |i: usize| fields[i];
        assert_eq!(field(0), (16384, 1043));
        assert_eq!(field(1), (0, 25));
        assert_eq!(field(2), (0, 1043));
    }

    #[test]
    fn memo_answers_like_a_fresh_patch_and_notices_changes() {
        let mut m = masks();
        m.expanded = vec![(0, "id".into()), (1, "phone".into()), (2, "id_card".into())];
        let m = Arc::new(m);
        let ok = description(&[("id", 20), ("phone", 1043), ("id_card", 25)]);
        let mut fresh = Vec::new();
        row_description(&ok, &m, &mut fresh).expect("matches");
        let mut memo = DescriptionMemo::default();
        for _ in 0..2 {
            let mut out = b"prefix".to_vec();
            memo.describe(&ok, &m, &mut out).expect("matches");
            assert_eq!(&out[6..], fresh.as_slice());
        }
        // Other bytes under the same masks: checked again, not answered from the memo.
        let shifted = description(&[("id", 20), ("id_card", 1043), ("note", 25)]);
        let mut out = Vec::new();
        assert_eq!(
            memo.describe(&shifted, &m, &mut out),
            Err(MaskError::StaleColumns)
        );
        assert!(out.is_empty());
        assert_eq!(
            memo.describe(&shifted, &m, &mut out),
            Err(MaskError::StaleColumns)
        );
        // Equal masks of another statement are other masks: patched for them.
        let other = Arc::new(masks());
        let plain = description(&[("a", 20), ("phone", 25), ("b", 1184)]);
        let mut want = Vec::new();
        row_description(&plain, &other, &mut want).expect("explicit columns");
        let mut out = Vec::new();
        memo.describe(&plain, &other, &mut out)
            .expect("explicit columns");
        assert_eq!(out, want);
        assert_eq!(
            memo.describe(&shifted, &m, &mut Vec::new()),
            Err(MaskError::StaleColumns)
        );
    }
}
