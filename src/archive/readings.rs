//! Reading a chain of archives for a run of readings, each wanting some of its
//! messages: one thread streams the chain and hands each member to the reading at hand.
//! A reading whose first message lies past where the stream stands goes on from there,
//! so a run whose readings follow the chain's order reads it once, not once a reading
//! (import's passes and `verify --against`'s parts each re-read the archive up to their
//! last message: at 1,000,000 messages in 25 passes import's CPU time a message was
//! twice that at 100,000). A reading whose messages the stream has gone past, or that
//! misses some when the chain ends, reads it again from its start.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use tokio::sync::oneshot;

use super::reader::{Member, MessageBody};
use super::{Archive, ReadError};

/// One reading: the messages it wants, what it does with each, and what it gives back.
pub(crate) trait Reading: Send + 'static {
    type Output: Send + 'static;

    /// Where its first wanted message is, as (archive, record): the chain's order.
    fn first(&self) -> Option<(usize, usize)>;

    /// Wanted messages not met yet: at 0 the reading is done.
    fn left(&self) -> usize;

    /// Message `record` of archive `ai`, with its bytes.
    fn message(&mut self, archives: &[Archive], ai: usize, record: usize, body: MessageBody<'_>);

    /// Before each member and at the end of each archive's stream.
    fn settle(&mut self, _archives: &[Archive]) {}

    /// Archive `ai`'s data failed: its wanted messages not met are out of reach. Called
    /// only for a reading that read the chain from its start.
    fn damaged(&mut self, ai: usize, e: ReadError);

    /// The answer, made on the reading thread once the reading is done.
    fn finish(self) -> Self::Output;
}

type Queue<R> = mpsc::Receiver<(R, oneshot::Sender<<R as Reading>::Output>)>;

/// The thread reading a chain for a run of readings of kind `R`; it ends when this is
/// dropped.
pub(crate) struct Readings<R: Reading> {
    queue: mpsc::Sender<(R, oneshot::Sender<R::Output>)>,
    /// Readings of the chain from its start so far.
    readings: Arc<AtomicU64>,
}

impl<R: Reading> Readings<R> {
    pub(crate) fn start(archives: Arc<Vec<Archive>>) -> Readings<R> {
        let (tx, rx) = mpsc::channel();
        let readings = Arc::new(AtomicU64::new(0));
        let counted = readings.clone();
        std::thread::Builder::new()
            .name("archive-reader".into())
            .spawn(move || serve(&archives, &rx, &counted))
            .expect("start the archive reading thread");
        Readings {
            queue: tx,
            readings,
        }
    }

    /// Starts `r` at once (not when its answer is awaited).
    pub(crate) fn read(&self, r: R) -> impl Future<Output = R::Output> {
        let (tx, rx) = oneshot::channel();
        let sent = self.queue.send((r, tx));
        async move {
            sent.expect("the archive reading thread ended");
            rx.await.expect("the archive reading thread panicked")
        }
    }

    /// How many times the chain was read from its start so far.
    pub(crate) fn readings_from_start(&self) -> u64 {
        self.readings.load(Ordering::Relaxed)
    }
}

/// Why the stream of an archive stopped before its end.
enum Halt {
    Read(ReadError),
    /// The next reading begins before what the stream has read.
    Again,
    /// No reading is left.
    Done,
}

impl From<ReadError> for Halt {
    fn from(e: ReadError) -> Halt {
        Halt::Read(e)
    }
}

struct Current<R: Reading> {
    reading: R,
    reply: oneshot::Sender<R::Output>,
    /// This reading of the chain began at its start.
    from_start: bool,
}

/// Answers `done` (if any), then takes the next reading that wants something (one that
/// wants nothing is answered at once); `None` when none is left.
fn next<R: Reading>(done: Option<Current<R>>, queue: &Queue<R>) -> Option<Current<R>> {
    if let Some(c) = done {
        let _ = c.reply.send(c.reading.finish());
    }
    loop {
        let (reading, reply) = queue.recv().ok()?;
        if reading.left() > 0 {
            return Some(Current {
                reading,
                reply,
                from_start: false,
            });
        }
        let _ = reply.send(reading.finish());
    }
}

fn serve<R: Reading>(archives: &[Archive], queue: &Queue<R>, readings: &AtomicU64) {
    let mut cur = next(None, queue);
    while let Some(c) = cur.as_mut() {
        readings.fetch_add(1, Ordering::Relaxed);
        c.from_start = true;
        // The last message member read, as (archive, record).
        let mut last: Option<(usize, usize)> = None;
        let mut again = false;
        for (ai, a) in archives.iter().enumerate() {
            let r = a.stream(|member| -> Result<(), Halt> {
                let c = cur.as_mut().expect("a reading is under way");
                c.reading.settle(archives);
                if c.reading.left() == 0 {
                    let n = next(cur.take(), queue).ok_or(Halt::Done)?;
                    let behind = matches!((n.reading.first(), last), (Some(f), Some(l)) if f <= l);
                    cur = Some(n);
                    if behind {
                        return Err(Halt::Again);
                    }
                }
                let Member::Message { record, body } = member else {
                    return Ok(());
                };
                last = Some((ai, record));
                let c = cur.as_mut().expect("a reading is under way");
                c.reading.message(archives, ai, record, body);
                Ok(())
            });
            let Some(c) = cur.as_mut() else {
                return;
            };
            c.reading.settle(archives);
            match r {
                Ok(_) => {}
                Err(Halt::Done) => return,
                // Damage puts what lies past it out of reach only for a reading that
                // read the archive from its start; another reads the chain again.
                Err(Halt::Read(e)) if c.from_start => c.reading.damaged(ai, e),
                Err(Halt::Read(_) | Halt::Again) => {
                    again = true;
                    break;
                }
            }
        }
        let c = cur.as_ref().expect("a reading is under way");
        // A reading that began mid-chain and still misses messages (the index lists
        // them in another order than the members) reads the chain again.
        if again || (c.reading.left() > 0 && !c.from_start) {
            continue;
        }
        cur = next(cur.take(), queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{ArchiveWriter, FolderInfo, MessageInfo, WriterOptions};
    use std::io::Read as _;

    /// Wants the messages of `want` (chain order), notes each body it met.
    struct Collect {
        want: Vec<(usize, usize)>,
        got: Vec<((usize, usize), Vec<u8>)>,
        lost: Vec<usize>,
    }

    impl Reading for Collect {
        type Output = (Vec<((usize, usize), Vec<u8>)>, Vec<usize>);
        fn first(&self) -> Option<(usize, usize)> {
            self.want.first().copied()
        }
        fn left(&self) -> usize {
            self.want.len() - self.got.len() - self.lost.len()
        }
        fn message(&mut self, _: &[Archive], ai: usize, record: usize, mut body: MessageBody<'_>) {
            if self.want.binary_search(&(ai, record)).is_ok()
                && !self.got.iter().any(|g| g.0 == (ai, record))
            {
                let mut b = Vec::new();
                body.read_to_end(&mut b).unwrap();
                self.got.push(((ai, record), b));
            }
        }
        fn damaged(&mut self, ai: usize, _: ReadError) {
            self.lost.push(ai);
        }
        fn finish(self) -> Self::Output {
            let mut got = self.got;
            got.sort();
            (got, self.lost)
        }
    }

    fn archive(dir: &std::path::Path, name: &str, n: usize) -> Archive {
        let path = dir.join(name);
        let mut w = ArchiveWriter::create(&path, WriterOptions::default()).unwrap();
        w.add_folder(FolderInfo::simple("INBOX", Some('/')))
            .unwrap();
        for i in 0..n {
            let info = MessageInfo {
                folder: "INBOX".into(),
                flags: Vec::new(),
                internaldate: None,
                source: crate::archive::SourceRef::Local {
                    path: format!("{name}/{i}"),
                },
                source_size: None,
            };
            let body = format!("Subject: {name} {i}\r\n\r\nbody\r\n");
            w.add_message(info, body.as_bytes()).unwrap();
        }
        w.finish().unwrap();
        Archive::open(&path).unwrap()
    }

    fn want(v: &[(usize, usize)]) -> Collect {
        Collect {
            want: v.to_vec(),
            got: Vec::new(),
            lost: Vec::new(),
        }
    }

    #[tokio::test]
    async fn readings_in_chain_order_read_it_once_and_one_behind_reads_it_again() {
        let t = tempfile::tempdir().unwrap();
        let chain = Arc::new(vec![archive(t.path(), "a", 4), archive(t.path(), "b", 3)]);
        let r = Readings::start(chain.clone());
        let body = |ai: usize, i: usize| {
            format!("Subject: {} {i}\r\n\r\nbody\r\n", ["a", "b"][ai]).into_bytes()
        };
        let (got, _) = r.read(want(&[(0, 0), (0, 1)])).await;
        assert_eq!(got, vec![((0, 0), body(0, 0)), ((0, 1), body(0, 1))]);
        let (got, _) = r.read(want(&[(0, 3), (1, 1)])).await;
        assert_eq!(got, vec![((0, 3), body(0, 3)), ((1, 1), body(1, 1))]);
        let (got, _) = r.read(want(&[])).await;
        assert!(got.is_empty());
        assert_eq!(
            r.readings_from_start(),
            1,
            "each reading went on from the last"
        );
        // Behind the stream: read again from the start.
        let (got, _) = r.read(want(&[(0, 2), (1, 2)])).await;
        assert_eq!(got, vec![((0, 2), body(0, 2)), ((1, 2), body(1, 2))]);
        assert_eq!(r.readings_from_start(), 2);
        // Past the chain's end, a reading still finds what it wants from the start.
        let (got, _) = r.read(want(&[(1, 0)])).await;
        assert_eq!(got, vec![((1, 0), body(1, 0))]);
        assert_eq!(r.readings_from_start(), 3);
    }
}
