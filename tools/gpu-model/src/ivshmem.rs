//! The ivshmem server protocol (QEMU `docs/specs/ivshmem-spec.rst`, "The ivshmem Client-Server
//! Protocol"): the model is the server QEMU's `ivshmem-doorbell` connects to.
//!
//! Every message is one little-endian i64, optionally with one file descriptor (SCM_RIGHTS).
//! On connect the server sends: the protocol version (0); the client's ID; -1 with the
//! shared-memory fd; for every other peer, that peer's ID once per vector with the eventfd that
//! interrupts it; then the client's own ID once per vector with the eventfds it receives
//! interrupts on. Later: a peer ID with an fd = that peer connected, without = it left.
//!
//! The model takes part as peer [`MODEL_PEER_ID`] with eventfds of its own: the guest's doorbell
//! write `(MODEL_PEER_ID << 16) | vector` makes QEMU signal the model's eventfd for `vector`,
//! and the model raises the guest's MSI-X vector by signalling the guest's own eventfd.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

pub use crate::regs::MODEL_PEER_ID;

/// The protocol version QEMU's ivshmem accepts.
pub const PROTOCOL_VERSION: i64 = 0;
/// The message value that carries the shared-memory fd.
pub const SHM_MESSAGE: i64 = -1;
/// Peer IDs are 16 bits (the doorbell register's field).
pub const MAX_PEER_ID: u16 = u16::MAX;

/// Send one protocol message.
pub fn send(stream: &UnixStream, value: i64, fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    let bytes = value.to_le_bytes();
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = raw.as_ref().map(|r| ControlMessage::ScmRights(r)).into_iter().collect();
    let sent = sendmsg::<UnixAddr>(stream.as_raw_fd(), &[IoSlice::new(&bytes)], &cmsgs, MsgFlags::empty(), None)?;
    if sent != bytes.len() {
        return Err(std::io::Error::other("short ivshmem message"));
    }
    Ok(())
}

/// Receive one protocol message (the client side; used by tests and by tools that act as a
/// fake QEMU). `Ok(None)` at end of stream.
pub fn receive(stream: &UnixStream) -> std::io::Result<Option<(i64, Option<OwnedFd>)>> {
    let mut bytes = [0u8; 8];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut bytes)];
    let msg = recvmsg::<UnixAddr>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let received = msg.bytes;
    let mut fd = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed this descriptor in our table for us (SCM_RIGHTS);
                // nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    match received {
        0 => Ok(None),
        8 => Ok(Some((i64::from_le_bytes(bytes), fd))),
        _ => Err(std::io::Error::other("short ivshmem message")),
    }
}

/// A connected client (a QEMU ivshmem-doorbell device).
pub struct Peer {
    /// Its ID.
    pub id: u16,
    /// The connection; readable = the client went away (clients never send).
    pub stream: UnixStream,
    /// The eventfds that interrupt it, one per vector.
    pub vectors: Vec<EventFd>,
}

impl Peer {
    /// Raise `vector` in this peer (an MSI-X interrupt in its guest).
    pub fn interrupt(&self, vector: u16) -> std::io::Result<()> {
        if let Some(fd) = self.vectors.get(usize::from(vector)) {
            fd.write(1)?;
        }
        Ok(())
    }
}

/// The server state: the shared-memory fd to hand out, the model's own doorbell eventfds and
/// the connected peers.
pub struct Server {
    shm: OwnedFd,
    /// The model's doorbell eventfds, one per vector (the guest rings them).
    pub doorbells: Vec<EventFd>,
    /// Connected peers.
    pub peers: Vec<Peer>,
    next_id: u16,
}

fn new_eventfd() -> std::io::Result<EventFd> {
    Ok(EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?)
}

impl Server {
    /// A server handing out `shm` with `vectors` interrupt vectors per peer.
    pub fn new(shm: OwnedFd, vectors: u16) -> std::io::Result<Self> {
        let doorbells = (0..vectors).map(|_| new_eventfd()).collect::<Result<_, _>>()?;
        Ok(Self { shm, doorbells, peers: Vec::new(), next_id: MODEL_PEER_ID + 1 })
    }

    fn fresh_id(&mut self) -> std::io::Result<u16> {
        for _ in 0..=MAX_PEER_ID {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(MODEL_PEER_ID + 1);
            if id != MODEL_PEER_ID && !self.peers.iter().any(|p| p.id == id) {
                return Ok(id);
            }
        }
        Err(std::io::Error::other("no free ivshmem peer ID"))
    }

    /// Run the connect sequence with a new client and add it to the peers. Returns its ID.
    pub fn connect(&mut self, stream: UnixStream) -> std::io::Result<u16> {
        let id = self.fresh_id()?;
        let vectors: Vec<EventFd> = (0..self.doorbells.len()).map(|_| new_eventfd()).collect::<Result<_, _>>()?;
        send(&stream, PROTOCOL_VERSION, None)?;
        send(&stream, i64::from(id), None)?;
        send(&stream, SHM_MESSAGE, Some(self.shm.as_fd()))?;
        // The model first, so the guest can ring it.
        for fd in &self.doorbells {
            send(&stream, i64::from(MODEL_PEER_ID), Some(fd.as_fd()))?;
        }
        for other in &self.peers {
            for fd in &other.vectors {
                send(&stream, i64::from(other.id), Some(fd.as_fd()))?;
            }
        }
        for fd in &vectors {
            send(&stream, i64::from(id), Some(fd.as_fd()))?;
        }
        // Tell the others; a failure there is theirs (they are dropped when their socket
        // reports the hang-up).
        for other in &self.peers {
            for fd in &vectors {
                let _ = send(&other.stream, i64::from(id), Some(fd.as_fd()));
            }
        }
        // From now on the model only reads the socket to notice a hang-up, without blocking.
        stream.set_nonblocking(true)?;
        self.peers.push(Peer { id, stream, vectors });
        Ok(id)
    }

    /// Forget peer `id` (its socket hung up) and tell the others.
    pub fn disconnect(&mut self, id: u16) {
        self.peers.retain(|p| p.id != id);
        for other in &self.peers {
            let _ = send(&other.stream, i64::from(id), None);
        }
    }

    /// Drain the model's doorbell eventfd `vector`; true if it had been rung.
    pub fn take_doorbell(&self, vector: usize) -> bool {
        self.doorbells.get(vector).is_some_and(|fd| fd.read().is_ok_and(|n| n > 0))
    }

    /// Raise `vector` in every peer.
    pub fn interrupt_all(&self, vector: u16) {
        for peer in &self.peers {
            let _ = peer.interrupt(vector);
        }
    }
}
