//! The broker's check of a batch's records: their framing is walked without copying anything,
//! so a batch whose header promises more (or other) records than it holds is refused before it
//! takes offsets.

use super::{read_varint, BatchError};

/// Checks that `section` holds exactly `count` well-framed records with offset deltas
/// `0..count`, and nothing after them.
///
/// # Errors
/// [`BatchError::MalformedRecord`] naming the first bad record, or
/// [`BatchError::TrailingBytes`] when bytes follow the last record.
pub(crate) fn check_records(section: &[u8], count: u32) -> Result<(), BatchError> {
    let mut rest = section;
    for index in 0..count {
        check_record(&mut rest, index).map_err(|reason| BatchError::MalformedRecord {
            index: index as usize,
            reason,
        })?;
    }
    if !rest.is_empty() {
        return Err(BatchError::TrailingBytes { len: rest.len() });
    }
    Ok(())
}

/// Walks one record, leaving `input` just past it.
fn check_record(input: &mut &[u8], index: u32) -> Result<(), &'static str> {
    let length = read_varint(input)?;
    let length = usize::try_from(length).map_err(|_| "negative record length")?;
    if length > input.len() {
        return Err("record length runs past the batch");
    }
    let (mut body, rest) = input.split_at(length);
    *input = rest;
    skip(&mut body, 1)?; // attributes: unused in v2
    read_varint(&mut body)?; // timestamp delta: any value is a timestamp
    if read_varint(&mut body)? != i64::from(index) {
        return Err("offset delta is not the record's position in the batch");
    }
    skip_nullable(&mut body)?; // key
    skip_nullable(&mut body)?; // value
    let headers = read_varint(&mut body)?;
    // Each header takes at least two bytes, so this bounds the loop by the record's size.
    if headers < 0 || headers as usize > body.len() / 2 {
        return Err("bad header count");
    }
    for _ in 0..headers {
        let name = read_varint(&mut body)?;
        if name < 0 {
            return Err("null header name");
        }
        skip_bytes(&mut body, name)?;
        skip_nullable(&mut body)?;
    }
    if !body.is_empty() {
        return Err("trailing bytes after record");
    }
    Ok(())
}

fn skip(input: &mut &[u8], n: usize) -> Result<(), &'static str> {
    if n > input.len() {
        return Err("field runs past the record");
    }
    *input = &input[n..];
    Ok(())
}

/// Skips a varint length and that many bytes; -1 is null.
fn skip_nullable(input: &mut &[u8]) -> Result<(), &'static str> {
    match read_varint(input)? {
        -1 => Ok(()),
        len => skip_bytes(input, len),
    }
}

fn skip_bytes(input: &mut &[u8], len: i64) -> Result<(), &'static str> {
    skip(input, usize::try_from(len).map_err(|_| "negative length")?)
}
