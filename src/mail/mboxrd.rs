//! mboxrd quoting: a line (at offset 0 or after LF) matching `>*From ` gets one more `>`
//! when written and loses one when read. Unlike mboxo this is reversible for every
//! message, which is why the archive's mbox layout uses it.

/// True when `data[i..]` is at a line start and matches `>*From `.
fn needs_quote(data: &[u8], i: usize) -> bool {
    let mut j = i;
    while j < data.len() && data[j] == b'>' {
        j += 1;
    }
    data[j..].starts_with(b"From ")
}

/// Appends `msg` to `out` with mboxrd quoting.
pub fn quote_into(msg: &[u8], out: &mut Vec<u8>) {
    let mut line_start = true;
    for (i, &b) in msg.iter().enumerate() {
        if line_start && needs_quote(msg, i) {
            out.push(b'>');
        }
        out.push(b);
        line_start = b == b'\n';
    }
}

/// Removes one level of mboxrd quoting.
pub fn unquote(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut line_start = true;
    let mut i = 0;
    while i < data.len() {
        if line_start && data[i] == b'>' && needs_quote(data, i) {
            i += 1; // drop one '>'
        }
        let b = data[i];
        out.push(b);
        line_start = b == b'\n';
        i += 1;
    }
    out
}

/// Removes mboxo quoting: only `>From ` (exactly one `>`) loses its `>`.
pub fn unquote_mboxo(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut line_start = true;
    let mut i = 0;
    while i < data.len() {
        if line_start && data[i..].starts_with(b">From ") {
            i += 1;
        }
        let b = data[i];
        out.push(b);
        line_start = b == b'\n';
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = b"From x\n>From y\n>>From z\nFrom\nA From b\n\nFrom ";
        let mut q = Vec::new();
        quote_into(m, &mut q);
        assert_eq!(q, b">From x\n>>From y\n>>>From z\nFrom\nA From b\n\n>From ");
        assert_eq!(unquote(&q), m);
        assert_eq!(unquote_mboxo(b">From a\n>>From b\n"), b"From a\n>>From b\n");
    }
}
