//! Ranks as processes, on one machine or several, joined over TCP through rank 0: the rendezvous of a
//! multi-process job and its host-side collectives (the CPU device's data parallelism, and the channel
//! an NCCL communicator's unique id travels on).
//!
//! Rank 0 listens on the rendezvous address; every other rank connects twice, a data link and a
//! heartbeat link, and says who it is. A collective is a star: each rank sends its values to rank 0,
//! which combines them in rank order (the same bits on every rank) and sends the result back.
//!
//! Failure is never a hang:
//! - a collective waits at most `collective_timeout` for a rank, then fails naming it;
//! - each side of a heartbeat link sends a byte every `heartbeat_timeout / 6`; a peer silent for
//!   `heartbeat_timeout` (stopped, hung outside a collective, its machine gone) or whose connection
//!   closes without a goodbye (its process killed) is declared dead, and the blocked collective is woken
//!   by shutting its link down;
//! - a rank that fails (a collective, or its own error through [`TcpGroup::abort`]) tells rank 0, which
//!   tells every other rank, so each one exits with the same reason naming the rank at fault. The news
//!   also travels on the heartbeat links (a DOWN frame with the reason), so a rank that is not in a
//!   collective (one waiting for its GPU, say) hears it at once and can act ([`TcpGroup::on_failure`]:
//!   the NCCL communicator's watchdog aborts the communicator).

use super::{broadcast_by_gather, reduce_in_order, text_values, values_text, Communicator, ReduceOp};
use crate::{Error, Result};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"FTRZ";
const VERSION: u32 = 1;
const KIND_DATA: u8 = 0;
const KIND_HEARTBEAT: u8 = 1;

const TAG_SUM: u8 = 1;
const TAG_MAX: u8 = 2;
const TAG_GATHER: u8 = 3;
const TAG_BROADCAST: u8 = 4;
const TAG_ABORT: u8 = 9;

const BEAT: u8 = b'h';
const BYE: u8 = b'b';
/// A failure's reason follows: a u32 length and that many bytes of text.
const DOWN: u8 = b'd';
/// The longest reason a DOWN frame carries.
const MAX_REASON: usize = 1 << 16;

/// The most values one frame may announce (a garbled header must not allocate the machine away).
const MAX_VALUES: u64 = 1 << 32;

#[derive(Debug, Clone, Copy)]
pub struct TcpOptions {
    /// How long rank 0 waits for every rank to join, and a rank for rank 0 to answer.
    pub join_timeout: Duration,
    /// How long a collective waits for the slowest rank; rank 0's evaluations must fit in it.
    pub collective_timeout: Duration,
    /// A peer silent this long is taken for dead.
    pub heartbeat_timeout: Duration,
}

impl TcpOptions {
    /// Joining within `join`, collectives within `collective`, and a heartbeat timeout of 60 s or the
    /// collective timeout when shorter.
    pub fn new(join: Duration, collective: Duration) -> TcpOptions {
        TcpOptions {
            join_timeout: join,
            collective_timeout: collective,
            heartbeat_timeout: collective.min(Duration::from_secs(60)),
        }
    }
}

/// What this rank knows of the job's health, shared with its heartbeat threads.
struct Health {
    rank: usize,
    /// The first failure seen; every later collective returns it.
    failed: Mutex<Option<String>>,
    /// Set by `close`: connections ending from now on are goodbyes, not deaths.
    closing: AtomicBool,
    /// Set when this rank's group is dropped: its heartbeat threads end quietly.
    dropped: AtomicBool,
    /// Clones of the data links, shut down to wake a collective blocked on a dead peer.
    wake: Vec<TcpStream>,
    /// The heartbeat links' write halves, on which a failure is announced.
    beats: Vec<Arc<Mutex<TcpStream>>>,
    /// Called once with the reason when this rank learns of the job's failure.
    hooks: Mutex<Vec<FailureHook>>,
}

/// What a rank runs when the job fails (on whichever thread learned it first).
pub type FailureHook = Box<dyn Fn(&str) + Send + Sync>;

impl Health {
    /// Records `why` (unless something failed first), wakes any blocked collective and, the first time,
    /// announces it on the heartbeat links and runs the failure hooks.
    fn fail(&self, why: String) {
        // The lock is held while the reason is announced, so that no `fail` returns (and no rank goes
        // away) before the first reason is on the wire.
        let first = match self.failed.lock() {
            Ok(mut f) if f.is_none() => {
                *f = Some(why.clone());
                // Before the links are shut: a peer reads the reason before it sees this side go away.
                let text = &why.as_bytes()[..why.len().min(MAX_REASON)];
                let mut frame = vec![DOWN];
                frame.extend((text.len() as u32).to_le_bytes());
                frame.extend(text);
                for b in &self.beats {
                    if let Ok(mut s) = b.lock() {
                        let _ = s.write_all(&frame);
                    }
                }
                true
            }
            _ => false,
        };
        for s in &self.wake {
            let _ = s.shutdown(Shutdown::Both);
        }
        if !first {
            return;
        }
        if let Ok(hooks) = self.hooks.lock() {
            for h in hooks.iter() {
                h(&why);
            }
        }
    }

    fn failure(&self) -> Option<String> {
        self.failed.lock().ok().and_then(|f| f.clone())
    }

    fn error(&self, why: String) -> Error {
        Error::Invalid(format!("rank {}: {why}", self.rank))
    }
}

/// One rank's membership in a job joined over TCP.
pub struct TcpGroup {
    rank: usize,
    world: usize,
    opts: TcpOptions,
    /// Rank 0: the data link of rank r at r - 1. Other ranks: the one link to rank 0.
    links: Mutex<Vec<TcpStream>>,
    /// The heartbeat links' write halves, for the goodbye.
    beats: Vec<Arc<Mutex<TcpStream>>>,
    seq: AtomicU64,
    health: Arc<Health>,
}

impl TcpGroup {
    /// Joins the job as `rank` of `world`: rank 0 listens on `port` (every interface) and waits for the
    /// others; the others connect to `host:port`. Returns once every rank has joined.
    pub fn join(rank: usize, world: usize, host: &str, port: u16, opts: TcpOptions) -> Result<TcpGroup> {
        if world == 0 || rank >= world {
            return Err(Error::Invalid(format!("rank {rank} of a world of {world}")));
        }
        let (links, beats) = if rank == 0 {
            accept_all(world, port, &opts)?
        } else {
            let data = connect(rank, world, host, port, KIND_DATA, &opts)?;
            let beat = connect(rank, world, host, port, KIND_HEARTBEAT, &opts)?;
            (vec![data], vec![beat])
        };
        let mut wake = Vec::with_capacity(links.len());
        for l in &links {
            l.set_nodelay(true).map_err(|e| Error::Io(format!("rank {rank}: TCP_NODELAY: {e}")))?;
            wake.push(l.try_clone().map_err(|e| Error::Io(format!("rank {rank}: a link's handle: {e}")))?);
        }
        let mut writers = Vec::with_capacity(beats.len());
        let mut readers = Vec::with_capacity(beats.len());
        for (i, b) in beats.into_iter().enumerate() {
            let peer = if rank == 0 { i + 1 } else { 0 };
            let _ = b.set_write_timeout(Some(Duration::from_secs(1)));
            let w = Arc::new(Mutex::new(
                b.try_clone().map_err(|e| Error::Io(format!("rank {rank}: a link's handle: {e}")))?,
            ));
            writers.push(w.clone());
            readers.push((b, w, peer));
        }
        // Every writer is known before any heartbeat thread runs: a failure one of them hears is
        // announced on every link.
        let health = Arc::new(Health {
            rank,
            failed: Mutex::new(None),
            closing: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            wake,
            beats: writers.clone(),
            hooks: Mutex::new(Vec::new()),
        });
        for (b, w, peer) in readers {
            let (h, timeout) = (health.clone(), opts.heartbeat_timeout);
            std::thread::Builder::new()
                .name(format!("heartbeat-{peer}"))
                .spawn(move || heartbeat(b, w, peer, timeout, h))
                .map_err(|e| Error::Io(format!("rank {rank}: cannot start a heartbeat thread: {e}")))?;
        }
        Ok(TcpGroup {
            rank,
            world,
            opts,
            links: Mutex::new(links),
            beats: writers,
            seq: AtomicU64::new(0),
            health,
        })
    }

    /// This rank leaves on purpose (the end of a job that went well, or after `abort` said why on the
    /// data link): peers that see its connections close from now on take it for a goodbye, not a death.
    /// Call it after the last collective.
    pub fn close(&self) {
        self.health.closing.store(true, Ordering::SeqCst);
        for b in &self.beats {
            if let Ok(mut s) = b.lock() {
                let _ = s.write_all(&[BYE]);
                let _ = s.flush();
            }
        }
    }

    /// This rank failed for `why`: rank 0 hears it and tells the others, who stop with it.
    pub fn abort(&self, why: &str) {
        let msg = format!("rank {} failed: {why}", self.rank);
        if let Ok(mut links) = self.links.lock() {
            tell_all(&mut links, &msg);
        }
        // Before the goodbye, while the peers' heartbeat threads still listen: the DOWN frame reaches
        // ranks that are not in a collective.
        self.health.fail(msg);
        self.close();
    }

    /// Why the job failed, once this rank knows it failed (the reason its failure hooks were given).
    pub fn failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// Runs `hook` with the reason when this rank learns that the job failed (a dead, silent or late
    /// peer, a peer's own failure, or this rank's `abort`); at once if it already has.
    pub fn on_failure(&self, hook: FailureHook) {
        // Under the hooks' lock, which `fail` takes after recording the failure: the hook runs once,
        // here or there.
        let Ok(mut hooks) = self.health.hooks.lock() else { return };
        match self.health.failure() {
            Some(why) => hook(&why),
            None => hooks.push(hook),
        }
    }

    /// Sends `v` under `tag` and returns rank 0's answer: the combined values (`TAG_SUM`, `TAG_MAX`,
    /// `TAG_BROADCAST`) or every rank's (`TAG_GATHER`).
    fn collective(&self, tag: u8, v: &[f64]) -> Result<Vec<Vec<f64>>> {
        if let Some(why) = self.health.failure() {
            return Err(self.health.error(why));
        }
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        let mut links = self.links.lock().map_err(|_| self.health.error("a collective panicked".into()))?;
        let r = if self.rank == 0 {
            self.lead(&mut links, tag, seq, v)
        } else {
            self.follow(&mut links[0], tag, seq, v)
        };
        if let Err(why) = &r {
            if self.rank == 0 {
                // Everyone else is waiting on rank 0: tell them why the job stops.
                tell_all(&mut links, why);
            }
            self.health.fail(why.clone());
        }
        r.map_err(|why| self.health.error(why))
    }

    /// Rank 0's side: every rank's values in rank order, combined, sent back.
    fn lead(
        &self,
        links: &mut [TcpStream],
        tag: u8,
        seq: u64,
        v: &[f64],
    ) -> std::result::Result<Vec<Vec<f64>>, String> {
        let mut parts = vec![v.to_vec()];
        // One deadline for the whole collective, however the ranks' arrivals are spread.
        let deadline = Instant::now() + self.opts.collective_timeout;
        for (i, l) in links.iter_mut().enumerate() {
            let peer = i + 1;
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            let _ = l.set_read_timeout(Some(left));
            let (t, s, data) = read_frame(l).map_err(|e| self.link_error(e, peer))?;
            if t == TAG_ABORT {
                return Err(values_text(&data));
            }
            if t != tag || s != seq {
                return Err(format!(
                    "rank {peer} is at collective {s} ({}), rank 0 at {seq} ({}): the ranks ran different steps",
                    tag_name(t),
                    tag_name(tag)
                ));
            }
            if matches!(tag, TAG_SUM | TAG_MAX) && data.len() != v.len() {
                return Err(format!(
                    "all-reduce of {} values on rank 0, {} on rank {peer}",
                    v.len(),
                    data.len()
                ));
            }
            parts.push(data);
        }
        let answer = match tag {
            TAG_SUM => vec![reduce_in_order(&parts, ReduceOp::Sum)],
            TAG_MAX => vec![reduce_in_order(&parts, ReduceOp::Max)],
            TAG_BROADCAST => vec![parts.swap_remove(0)],
            _ => parts,
        };
        for (i, l) in links.iter_mut().enumerate() {
            let _ = l.set_write_timeout(Some(self.opts.collective_timeout));
            write_answer(l, tag, seq, &answer).map_err(|e| self.link_error(e, i + 1))?;
        }
        Ok(answer)
    }

    /// Another rank's side: send, then wait for rank 0's answer.
    fn follow(
        &self,
        l: &mut TcpStream,
        tag: u8,
        seq: u64,
        v: &[f64],
    ) -> std::result::Result<Vec<Vec<f64>>, String> {
        let _ = l.set_write_timeout(Some(self.opts.collective_timeout));
        let mine: &[f64] = if tag == TAG_BROADCAST { &[] } else { v };
        write_frame(l, tag, seq, mine).map_err(|e| self.link_error(e, 0))?;
        // Longer than rank 0 waits for the others, so that its answer naming a late rank comes first.
        let _ = l.set_read_timeout(Some(2 * self.opts.collective_timeout + Duration::from_secs(1)));
        let (t, s, data) = read_frame(l).map_err(|e| self.link_error(e, 0))?;
        if t == TAG_ABORT {
            return Err(format!("rank 0 stopped the job: {}", values_text(&data)));
        }
        if t != tag || s != seq {
            return Err(format!(
                "rank 0 answered collective {s} ({}) to {seq} ({})",
                tag_name(t),
                tag_name(tag)
            ));
        }
        let n = data.first().map_or(0, |&n| n as usize);
        // The answer is a count of parts, then each part as its length and values.
        let mut parts = Vec::with_capacity(n);
        let mut at = 1;
        for _ in 0..n {
            let len = *data.get(at).ok_or("rank 0's answer is cut short")? as usize;
            let part = data.get(at + 1..at + 1 + len).ok_or("rank 0's answer is cut short")?;
            parts.push(part.to_vec());
            at += 1 + len;
        }
        Ok(parts)
    }

    /// A collective whose answer is one vector of `v`'s length (all-reduce, broadcast), copied into `v`.
    fn combined(&self, tag: u8, v: &mut [f64]) -> Result<()> {
        let out = self.collective(tag, v)?;
        let out = out.first().filter(|o| o.len() == v.len()).ok_or_else(|| {
            self.health.error(format!(
                "the {} of {} values came back with another length",
                tag_name(tag),
                v.len()
            ))
        })?;
        v.copy_from_slice(out);
        Ok(())
    }

    /// What a failed read or write on the link to `peer` means, preferring what the heartbeat saw.
    fn link_error(&self, e: std::io::Error, peer: usize) -> String {
        // A link that ends may be a failed peer shutting it after announcing why on the heartbeat link,
        // which this rank's heartbeat thread may not have read yet: give it a moment.
        let ended = !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
        let patience = Instant::now() + if ended { Duration::from_secs(2) } else { Duration::ZERO };
        loop {
            if let Some(why) = self.health.failure() {
                return why;
            }
            if Instant::now() >= patience {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
                "rank {peer} did not reach the collective within {:.0} s (--collective-timeout): hung, or far slower than the others",
                self.opts.collective_timeout.as_secs_f64()
            ),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                format!("rank {peer} left the job (its process ended or closed the connection)")
            }
            _ => format!("the link to rank {peer} failed: {e}"),
        }
    }
}

impl Drop for TcpGroup {
    /// Without `close` first, the peers see this rank's connections end as a death.
    fn drop(&mut self) {
        self.health.dropped.store(true, Ordering::SeqCst);
        for b in &self.beats {
            if let Ok(s) = b.lock() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        for s in &self.health.wake {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Communicator for TcpGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce(&self, v: &mut [f64], op: ReduceOp) -> Result<()> {
        let tag = match op {
            ReduceOp::Sum => TAG_SUM,
            ReduceOp::Max => TAG_MAX,
        };
        self.combined(tag, v)
    }
    fn all_gather(&self, v: &[f64]) -> Result<Vec<Vec<f64>>> {
        self.collective(TAG_GATHER, v)
    }
    fn broadcast(&self, v: &mut [f64], root: usize) -> Result<()> {
        // Rank 0 is the hub: its values go out in one pass; another root's go through a gather.
        match root {
            0 => self.combined(TAG_BROADCAST, v),
            _ => broadcast_by_gather(self, v, root),
        }
    }
}

/// Rank 0: listens on `port` and takes each other rank's data and heartbeat links, in rank order.
fn accept_all(world: usize, port: u16, opts: &TcpOptions) -> Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        Error::Io(format!(
            "rank 0: cannot listen on port {port} for the other ranks: {e} (choose another MASTER_PORT)"
        ))
    })?;
    listener.set_nonblocking(true).map_err(|e| Error::Io(format!("rank 0: port {port}: {e}")))?;
    let deadline = Instant::now() + opts.join_timeout;
    let mut data: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
    let mut beat: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
    while (1..world).any(|r| data[r].is_none() || beat[r].is_none()) {
        match listener.accept() {
            Ok((mut s, from)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let hello = match read_hello(&mut s) {
                    Ok(h) => h,
                    Err(why) => {
                        eprintln!("rank 0: ignored a connection from {from}: {why}");
                        continue;
                    }
                };
                let (kind, rank, their_world) = hello;
                let slot = if kind == KIND_DATA { &mut data } else { &mut beat };
                let refusal = if their_world != world {
                    Some(format!("rank {rank} was started for a world of {their_world}, rank 0 for {world}"))
                } else if rank == 0 || rank >= world {
                    Some(format!("a process from {from} says it is rank {rank} of {world}"))
                } else if slot[rank].is_some() {
                    Some(format!("two processes from {from} say they are rank {rank}"))
                } else {
                    None
                };
                if let Some(why) = refusal {
                    let _ = s.write_all(why.as_bytes());
                    return Err(Error::Invalid(format!("rank 0: {why}")));
                }
                s.write_all(b"FTOK").map_err(|e| Error::Io(format!("rank 0: answering rank {rank}: {e}")))?;
                let _ = s.set_read_timeout(None);
                slot[rank] = Some(s);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<usize> =
                        (1..world).filter(|&r| data[r].is_none() || beat[r].is_none()).collect();
                    return Err(Error::Invalid(format!(
                        "rank 0: ranks {missing:?} did not join within {:.0} s on port {port}",
                        opts.join_timeout.as_secs_f64()
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(Error::Io(format!("rank 0: accepting on port {port}: {e}"))),
        }
    }
    let take = |v: Vec<Option<TcpStream>>| v.into_iter().skip(1).flatten().collect::<Vec<_>>();
    Ok((take(data), take(beat)))
}

/// Another rank: connects to rank 0 (retrying until it listens) and introduces itself.
fn connect(
    rank: usize,
    world: usize,
    host: &str,
    port: u16,
    kind: u8,
    opts: &TcpOptions,
) -> Result<TcpStream> {
    let deadline = Instant::now() + opts.join_timeout;
    let mut last = String::from("no address");
    loop {
        let addrs: Vec<_> = match (host, port).to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                last = format!("cannot resolve {host}: {e}");
                Vec::new()
            }
        };
        for a in addrs {
            let Ok(mut s) = TcpStream::connect_timeout(&a, Duration::from_secs(2)) else {
                last = format!("{a} refused or did not answer");
                continue;
            };
            let _ = s.set_read_timeout(Some(opts.join_timeout));
            let mut hello = Vec::with_capacity(17);
            hello.extend_from_slice(MAGIC);
            hello.extend_from_slice(&VERSION.to_le_bytes());
            hello.push(kind);
            hello.extend_from_slice(&(rank as u32).to_le_bytes());
            hello.extend_from_slice(&(world as u32).to_le_bytes());
            if let Err(e) = s.write_all(&hello) {
                last = format!("{a}: {e}");
                continue;
            }
            let mut answer = Vec::new();
            let mut ok = [0u8; 4];
            match s.read_exact(&mut ok) {
                Ok(()) if &ok == b"FTOK" => {
                    let _ = s.set_read_timeout(None);
                    return Ok(s);
                }
                Ok(()) => {
                    answer.extend_from_slice(&ok);
                    let _ = s.read_to_end(&mut answer);
                    return Err(Error::Invalid(format!(
                        "rank {rank}: rank 0 at {host}:{port} refused: {}",
                        String::from_utf8_lossy(&answer)
                    )));
                }
                Err(e) => last = format!("{a}: no answer to the introduction: {e}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Io(format!(
                "rank {rank}: could not reach rank 0 at {host}:{port} within {:.0} s ({last})",
                opts.join_timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_hello(s: &mut TcpStream) -> std::result::Result<(u8, usize, usize), String> {
    let mut h = [0u8; 17];
    s.read_exact(&mut h).map_err(|e| format!("no introduction: {e}"))?;
    if &h[0..4] != MAGIC {
        return Err("not an engine-train rank".into());
    }
    let version = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    if version != VERSION {
        return Err(format!("rendezvous protocol {version}, this build speaks {VERSION}"));
    }
    let kind = h[8];
    if kind != KIND_DATA && kind != KIND_HEARTBEAT {
        return Err(format!("unknown link kind {kind}"));
    }
    let rank = u32::from_le_bytes([h[9], h[10], h[11], h[12]]) as usize;
    let world = u32::from_le_bytes([h[13], h[14], h[15], h[16]]) as usize;
    Ok((kind, rank, world))
}

/// One side of a heartbeat link: beats every `timeout / 6` and watches the peer's beats.
fn heartbeat(mut s: TcpStream, out: Arc<Mutex<TcpStream>>, peer: usize, timeout: Duration, h: Arc<Health>) {
    let every = (timeout / 6).max(Duration::from_millis(10));
    let _ = s.set_read_timeout(Some(every));
    let mut last = Instant::now();
    let mut buf = [0u8; 64];
    let quiet = || h.closing.load(Ordering::SeqCst) || h.dropped.load(Ordering::SeqCst);
    loop {
        if quiet() {
            return;
        }
        if let Ok(mut w) = out.lock() {
            // A failed write shows up as the peer's silence or end below.
            let _ = w.write_all(&[BEAT]);
        }
        match s.read(&mut buf) {
            Ok(0) => {
                if !quiet() {
                    h.fail(format!(
                        "rank {peer}'s process ended without finishing the job (killed or crashed)"
                    ));
                }
                return;
            }
            Ok(n) => {
                if let Some(i) = buf[..n].iter().position(|&b| b == DOWN) {
                    let why = read_reason(&mut s, &buf[i + 1..n], peer);
                    h.fail(why);
                    return;
                }
                if buf[..n].contains(&BYE) {
                    return;
                }
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => {
                if !quiet() {
                    h.fail(format!(
                        "rank {peer}'s process ended without finishing the job (its connection broke)"
                    ));
                }
                return;
            }
        }
        if last.elapsed() > timeout && !quiet() {
            h.fail(format!(
                "rank {peer} sent no heartbeat for {:.0} s: stopped, hung, or its machine is unreachable",
                timeout.as_secs_f64()
            ));
            return;
        }
    }
}

/// The reason of a DOWN frame whose first bytes after the tag are `got` (the rest is read from `s`).
fn read_reason(s: &mut TcpStream, got: &[u8], peer: usize) -> String {
    let mut b = got.to_vec();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 4096];
    let want = |b: &[u8]| {
        b.get(..4).map(|l| 4 + (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize).min(MAX_REASON))
    };
    while want(&b).is_none_or(|w| b.len() < w) && Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => b.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break,
        }
    }
    match want(&b) {
        Some(w) if b.len() >= w => String::from_utf8_lossy(&b[4..w]).into_owned(),
        _ => format!("rank {peer} reported a failure (its reason was cut short)"),
    }
}

fn write_frame(s: &mut TcpStream, tag: u8, seq: u64, v: &[f64]) -> std::io::Result<()> {
    let mut b = Vec::with_capacity(17 + 8 * v.len());
    b.push(tag);
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&(v.len() as u64).to_le_bytes());
    for x in v {
        b.extend_from_slice(&x.to_le_bytes());
    }
    s.write_all(&b)
}

/// Rank 0's answer: the number of parts, then each as its length and values, in one frame.
fn write_answer(s: &mut TcpStream, tag: u8, seq: u64, parts: &[Vec<f64>]) -> std::io::Result<()> {
    let mut flat = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 1).sum::<usize>());
    flat.push(parts.len() as f64);
    for p in parts {
        flat.push(p.len() as f64);
        flat.extend_from_slice(p);
    }
    write_frame(s, tag, seq, &flat)
}

/// An abort carries its reason as bytes, one per value.
fn write_abort(s: &mut TcpStream, why: &str) -> std::io::Result<()> {
    write_frame(s, TAG_ABORT, u64::MAX, &text_values(why))
}

/// An abort with `why` on every link, each write given a second at most (a peer may be gone).
fn tell_all(links: &mut [TcpStream], why: &str) {
    for l in links.iter_mut() {
        let _ = l.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = write_abort(l, why);
    }
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, u64, Vec<f64>)> {
    let mut h = [0u8; 17];
    s.read_exact(&mut h)?;
    let seq = u64::from_le_bytes(h[1..9].try_into().unwrap_or_default());
    let n = u64::from_le_bytes(h[9..17].try_into().unwrap_or_default());
    if n > MAX_VALUES {
        return Err(std::io::Error::new(ErrorKind::InvalidData, format!("a frame announces {n} values")));
    }
    let mut bytes = vec![0u8; 8 * n as usize];
    s.read_exact(&mut bytes)?;
    let v = bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
    Ok((h[0], seq, v))
}

fn tag_name(t: u8) -> &'static str {
    match t {
        TAG_SUM => "all-reduce sum",
        TAG_MAX => "all-reduce max",
        TAG_GATHER => "all-gather",
        TAG_BROADCAST => "broadcast",
        TAG_ABORT => "abort",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
    }

    fn opts(collective_ms: u64) -> TcpOptions {
        TcpOptions::new(Duration::from_secs(10), Duration::from_millis(collective_ms))
    }

    /// `world` ranks as threads, each joining over localhost and running `f`.
    fn job<T: Send + 'static>(
        world: usize,
        o: TcpOptions,
        f: impl Fn(TcpGroup) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let port = free_port();
        let f = Arc::new(f);
        let hs: Vec<_> = (0..world)
            .map(|r| {
                let f = f.clone();
                std::thread::spawn(move || f(TcpGroup::join(r, world, "127.0.0.1", port, o).unwrap()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn collectives_give_every_rank_the_in_order_result() {
        let out = job(3, opts(5000), |g| {
            let r = g.rank() as f64;
            let mut s = vec![r + 0.1, 10.0 * r];
            g.all_reduce(&mut s, ReduceOp::Sum).unwrap();
            let mut m = vec![-r, r];
            g.all_reduce(&mut m, ReduceOp::Max).unwrap();
            let all = g.all_gather(&vec![r; g.rank() + 1]).unwrap();
            let mut b = vec![r + 7.0; 2];
            g.broadcast(&mut b, 0).unwrap();
            let mut b2 = vec![r; 1];
            g.broadcast(&mut b2, 2).unwrap();
            g.close();
            (s, m, all, b, b2)
        });
        let want_sum = vec![((0.1 + 1.1) + 2.1), 30.0];
        for (s, m, all, b, b2) in out {
            assert_eq!(s, want_sum);
            assert_eq!(m, vec![0.0, 2.0]);
            assert_eq!(all, vec![vec![0.0], vec![1.0, 1.0], vec![2.0, 2.0, 2.0]]);
            assert_eq!(b, vec![7.0, 7.0]);
            assert_eq!(b2, vec![2.0]);
        }
    }

    #[test]
    fn a_rank_that_never_comes_fails_the_collective_naming_it() {
        let t0 = Instant::now();
        let out = job(3, opts(300), |g| {
            if g.rank() == 2 {
                // Joined, then hangs outside any collective (its heartbeats go on).
                std::thread::sleep(Duration::from_millis(1500));
                return String::new();
            }
            let mut v = vec![1.0];
            g.all_reduce(&mut v, ReduceOp::Sum).unwrap_err().to_string()
        });
        assert!(out[0].contains("rank 2 did not reach the collective"), "{}", out[0]);
        assert!(out[1].contains("rank 0 stopped the job") && out[1].contains("rank 2"), "{}", out[1]);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_rank_that_fails_stops_the_others_with_its_reason() {
        let out = job(3, opts(5000), |g| {
            if g.rank() == 1 {
                g.abort("label 9 of sample 3 is outside [0, 5)");
                return String::new();
            }
            let mut v = vec![1.0];
            g.all_reduce(&mut v, ReduceOp::Sum).unwrap_err().to_string()
        });
        for e in [&out[0], &out[2]] {
            assert!(e.contains("rank 1 failed: label 9 of sample 3"), "{e}");
        }
    }

    #[test]
    fn a_dead_or_silent_peer_is_noticed_by_its_heartbeat() {
        // Rank 1 joins and then its links vanish without a goodbye (a killed process); rank 0, waiting
        // in a collective with a long timeout, hears of it from the heartbeat at once.
        let t0 = Instant::now();
        let out = job(2, TcpOptions::new(Duration::from_secs(10), Duration::from_secs(30)), |g| {
            if g.rank() == 1 {
                drop(g);
                return String::new();
            }
            let mut v = vec![1.0];
            let e = g.all_reduce(&mut v, ReduceOp::Sum).unwrap_err().to_string();
            // Every later collective repeats the failure instead of waiting again.
            let again = g.all_gather(&[1.0]).unwrap_err().to_string();
            assert_eq!(e, again);
            e
        });
        assert!(out[0].contains("rank 1"), "{}", out[0]);
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

        // A silent peer: its heartbeat thread is gone but its connection stays open.
        let o = TcpOptions { heartbeat_timeout: Duration::from_millis(400), ..opts(30_000) };
        let port = free_port();
        let zero = std::thread::spawn(move || {
            let g = TcpGroup::join(0, 2, "127.0.0.1", port, o).unwrap();
            let mut v = vec![1.0];
            g.all_reduce(&mut v, ReduceOp::Sum).unwrap_err().to_string()
        });
        // A hand-made rank 1 that introduces itself and then says nothing.
        let silent = |kind| {
            let o = TcpOptions::new(Duration::from_secs(10), Duration::from_secs(30));
            connect(1, 2, "127.0.0.1", port, kind, &o).unwrap()
        };
        let (_d, _b) = (silent(KIND_DATA), silent(KIND_HEARTBEAT));
        let e = zero.join().unwrap();
        assert!(e.contains("rank 1 sent no heartbeat"), "{e}");
    }

    #[test]
    fn a_failure_reaches_ranks_outside_a_collective_through_their_hooks() {
        // Rank 2 fails on its own; ranks 0 and 1 are not in a collective (waiting for a GPU, say) and
        // learn it from the heartbeat links within a second, with rank 2's reason, exactly once.
        let t0 = Instant::now();
        let out = job(3, opts(30_000), move |g| {
            if g.rank() == 2 {
                std::thread::sleep(Duration::from_millis(200));
                g.abort("out of memory on its GPU");
                return (Vec::new(), Duration::ZERO);
            }
            let (tx, rx) = std::sync::mpsc::channel::<String>();
            let tx = Mutex::new(tx);
            g.on_failure(Box::new(move |why| {
                let _ = tx.lock().unwrap().send(why.to_string());
            }));
            let first = rx.recv_timeout(Duration::from_secs(10)).expect("no failure heard");
            let heard = t0.elapsed();
            // A hook added after the failure runs at once, with the same reason.
            let (tx2, rx2) = std::sync::mpsc::channel::<String>();
            let tx2 = Mutex::new(tx2);
            g.on_failure(Box::new(move |why| {
                let _ = tx2.lock().unwrap().send(why.to_string());
            }));
            let late = rx2.try_recv().expect("a late hook did not run");
            assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "a hook ran twice");
            (vec![first, late], heard)
        });
        for (r, (whys, heard)) in out.iter().take(2).enumerate() {
            for why in whys {
                assert!(why.contains("rank 2 failed: out of memory on its GPU"), "rank {r}: {why}");
            }
            assert!(*heard < Duration::from_secs(3), "rank {r} heard after {heard:?}");
        }
    }

    #[test]
    fn a_clean_close_is_not_a_death() {
        let out = job(2, TcpOptions { heartbeat_timeout: Duration::from_millis(300), ..opts(5000) }, |g| {
            let mut v = vec![1.0];
            g.all_reduce(&mut v, ReduceOp::Sum).unwrap();
            g.close();
            std::thread::sleep(Duration::from_millis(600));
            g.health.failure()
        });
        assert_eq!(out, vec![None, None]);
    }

    #[test]
    fn a_stranger_or_a_mismatched_world_is_refused() {
        let port = free_port();
        let o = opts(2000);
        let zero = std::thread::spawn(move || {
            TcpGroup::join(0, 2, "127.0.0.1", port, o).err().map(|e| e.to_string())
        });
        std::thread::sleep(Duration::from_millis(100));
        // Not an engine-train rank: ignored; rank 0 keeps waiting.
        let mut stranger = loop {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                break s;
            }
        };
        stranger.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let e = TcpGroup::join(1, 3, "127.0.0.1", port, o).err().unwrap().to_string();
        assert!(e.contains("refused") && e.contains("world of 3"), "{e}");
        let e0 = zero.join().unwrap().unwrap();
        assert!(e0.contains("world of 3"), "{e0}");
    }
}
