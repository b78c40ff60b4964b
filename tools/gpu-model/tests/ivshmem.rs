//! The ivshmem server handshake against a fake client (what QEMU's ivshmem-doorbell does) over a
//! socketpair, and the doorbell / interrupt eventfds it hands out.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use gpu_model::ivshmem::{receive, Server, MODEL_PEER_ID, PROTOCOL_VERSION, SHM_MESSAGE};

const VECTORS: u16 = 2;

fn shm_file(tag: &str) -> (std::path::PathBuf, OwnedFd) {
    let path = std::env::temp_dir().join(format!("gpu-model-ivshmem-{tag}-{}", std::process::id()));
    let file = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    file.set_len(1 << 20).unwrap();
    (path, file.into())
}

/// Receive the next message, which must have `value` and (or not) an fd.
fn expect(client: &UnixStream, value: i64, with_fd: bool) -> Option<File> {
    let (got, fd) = receive(client).unwrap().expect("message");
    assert_eq!(got, value);
    assert_eq!(fd.is_some(), with_fd, "fd with message {value}");
    fd.map(File::from)
}

fn ring(fd: &mut File) {
    fd.write_all(&1u64.to_ne_bytes()).unwrap();
}

fn rung(fd: &mut File) -> u64 {
    let mut b = [0; 8];
    fd.read_exact(&mut b).unwrap();
    u64::from_ne_bytes(b)
}

#[test]
fn handshake_hands_out_shared_memory_and_eventfds() {
    let (path, shm) = shm_file("handshake");
    let mut server = Server::new(shm, VECTORS).unwrap();
    let (ours, client) = UnixStream::pair().unwrap();
    let id = server.connect(ours).unwrap();
    assert_ne!(id, MODEL_PEER_ID);

    expect(&client, PROTOCOL_VERSION, false);
    expect(&client, i64::from(id), false);
    let shm = expect(&client, SHM_MESSAGE, true).unwrap();
    assert_eq!(shm.metadata().unwrap().len(), 1 << 20, "the fd is the shared-memory file");
    let mut model: Vec<File> = (0..VECTORS).map(|_| expect(&client, 0, true).unwrap()).collect();
    let mut own: Vec<File> = (0..VECTORS).map(|_| expect(&client, i64::from(id), true).unwrap()).collect();

    // The guest's doorbell write for (model, vector 1) signals the model's eventfd 1.
    assert!(!server.take_doorbell(1));
    ring(&mut model[1]);
    assert!(!server.take_doorbell(0));
    assert!(server.take_doorbell(1));
    assert!(!server.take_doorbell(1), "drained");
    ring(&mut model[0]);
    assert!(server.take_doorbell(0));

    // The model's interrupt signals the client's own eventfd for that vector.
    server.interrupt_all(1);
    assert_eq!(rung(&mut own[1]), 1);

    // A second client learns about the first; the first is told about the second, then about
    // its departure.
    let (ours2, client2) = UnixStream::pair().unwrap();
    let id2 = server.connect(ours2).unwrap();
    assert_ne!(id2, id);
    expect(&client2, PROTOCOL_VERSION, false);
    expect(&client2, i64::from(id2), false);
    expect(&client2, SHM_MESSAGE, true);
    for _ in 0..VECTORS {
        expect(&client2, 0, true);
    }
    let mut first: Vec<File> = (0..VECTORS).map(|_| expect(&client2, i64::from(id), true).unwrap()).collect();
    for _ in 0..VECTORS {
        expect(&client2, i64::from(id2), true);
    }
    for _ in 0..VECTORS {
        expect(&client, i64::from(id2), true);
    }
    // Peer 2 interrupting peer 1 reaches peer 1's own eventfd.
    ring(&mut first[0]);
    assert_eq!(rung(&mut own[0]), 1);

    drop(client2);
    server.disconnect(id2);
    expect(&client, i64::from(id2), false);
    assert_eq!(server.peers.len(), 1);
    drop(own);
    std::fs::remove_file(path).unwrap();
}
