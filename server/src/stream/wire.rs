//! Reading a stream back as a client does: HTTP/1.1 chunked coding and the
//! `text/event-stream` fields, fed incrementally as bytes arrive. The server only writes
//! (see `frame`); the simulated clients and the real-run clients share this decoder.

/// One dispatched item of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An event (id, type, data).
    Event { id: String, event: String, data: String },
    /// A `retry:` field.
    Retry(u64),
    /// A block with an `id:` and no data: it sets the last event id, dispatching nothing.
    Position(String),
}

/// Decodes chunked bodies and SSE fields.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    raw: Vec<u8>,
    /// Bytes left in the current chunk, or `None` while reading a size line.
    chunk_left: Option<usize>,
    finished: bool,
    text: Vec<u8>,
    id: Option<String>,
    /// Whether the block being read has an `id:` field.
    id_in_block: bool,
    event: String,
    data: Option<String>,
}

impl StreamDecoder {
    /// Feeds body bytes (after the head); returns the items completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Item>, String> {
        self.raw.extend_from_slice(bytes);
        // Bytes after the last chunk (its trailer) carry no events.
        while !self.finished {
            match self.chunk_left {
                None => {
                    let Some(end) = find(&self.raw, b"\r\n") else { break };
                    let line = std::str::from_utf8(&self.raw[..end]).map_err(|_| "chunk size not UTF-8")?;
                    let size =
                        usize::from_str_radix(line.trim(), 16).map_err(|_| format!("bad chunk size {line:?}"))?;
                    self.raw.drain(..end + 2);
                    if size == 0 {
                        self.finished = true;
                        break;
                    }
                    self.chunk_left = Some(size);
                }
                Some(left) => {
                    // A chunk is decoded once it is whole (with its CRLF).
                    if self.raw.len() < left + 2 {
                        break;
                    }
                    if &self.raw[left..left + 2] != b"\r\n" {
                        return Err("chunk not followed by CRLF".into());
                    }
                    self.text.extend(self.raw.drain(..left));
                    self.raw.drain(..2);
                    self.chunk_left = None;
                }
            }
        }
        self.lines()
    }

    /// Whether the terminating zero-length chunk was seen.
    pub fn finished(&self) -> bool {
        self.finished
    }

    fn lines(&mut self) -> Result<Vec<Item>, String> {
        let mut items = Vec::new();
        while let Some(end) = self.text.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.text.drain(..=end).collect();
            let line = std::str::from_utf8(&line[..end]).map_err(|_| "event line not UTF-8")?;
            if line.is_empty() {
                if let Some(mut data) = self.data.take() {
                    data.pop();
                    let id = self.id.clone().unwrap_or_default();
                    items.push(Item::Event { id, event: std::mem::take(&mut self.event), data });
                } else if let Some(id) = self.id.clone().filter(|_| self.id_in_block) {
                    items.push(Item::Position(id));
                }
                self.id_in_block = false;
                self.event.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => {
                    self.id = Some(value.to_owned());
                    self.id_in_block = true;
                }
                "event" => self.event = value.to_owned(),
                "data" => {
                    let data = self.data.get_or_insert_with(String::new);
                    data.push_str(value);
                    data.push('\n');
                }
                "retry" => {
                    if let Ok(ms) = value.parse() {
                        items.push(Item::Retry(ms));
                    }
                }
                _ => {}
            }
        }
        Ok(items)
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_events_split_anywhere() {
        let body = b"c\r\nretry: 500\n\n\r\n9\r\nid: 1-0\n\n\r\n22\r\nid: 1-1\nevent: x\ndata: a\ndata: b\n\n\r\n3\r\n:\n\n\r\n0\r\n\r\n";
        for split in 1..body.len() {
            let mut decoder = StreamDecoder::default();
            let mut items = decoder.feed(&body[..split]).unwrap();
            items.extend(decoder.feed(&body[split..]).unwrap());
            assert_eq!(
                items,
                [
                    Item::Retry(500),
                    Item::Position("1-0".into()),
                    Item::Event { id: "1-1".into(), event: "x".into(), data: "a\nb".into() }
                ],
                "split at {split}"
            );
            assert!(decoder.finished());
        }
    }
}
