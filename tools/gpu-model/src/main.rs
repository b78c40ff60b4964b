//! `gpu-model`: run the GPU model as the ivshmem server that QEMU's `ivshmem-doorbell` device
//! connects to. It creates the shared BAR file (registers + GTT + local memory) and maps the
//! guest's RAM file, then serves: doorbells (and, as a safety net, a periodic poll) run the
//! engine; completions and faults raise the guest's MSI-X vector.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use gpu_model::gpu::Gpu;
use gpu_model::ivshmem::Server;
use gpu_model::memory::Memory;
use gpu_model::regs::*;
use gpu_model::shm::{Mapping, View};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "Bulkhead's test GPU, served to QEMU's ivshmem-doorbell")]
struct Args {
    /// UNIX socket to listen on (QEMU: -chardev socket,path=THIS,id=gpu).
    #[arg(long)]
    socket: PathBuf,
    /// File for the shared BAR (registers, GTT, local memory); created or resized.
    #[arg(long)]
    bar: PathBuf,
    /// Local memory size in MiB.
    #[arg(long, default_value_t = 64)]
    local_mib: u64,
    /// Guest RAM file (QEMU: -object memory-backend-file,mem-path=THIS,share=on); created or
    /// resized to --ram-mib, so start the model before QEMU.
    #[arg(long)]
    ram: PathBuf,
    /// Guest RAM size in MiB (QEMU's -m / the backend's size).
    #[arg(long)]
    ram_mib: u64,
    /// Guest physical address of the first byte of the RAM file (arm64 virt: 0x40000000,
    /// x86 q35: 0; q35 RAM above its low-memory limit is not modelled).
    #[arg(long, value_parser = parse_u64)]
    ram_base: u64,
    /// Interrupt vectors per peer (QEMU: ivshmem-doorbell,vectors=THIS).
    #[arg(long, default_value_t = 1)]
    vectors: u16,
    /// Also look at the registers every this many milliseconds without a doorbell (0 = only on
    /// doorbells).
    #[arg(long, default_value_t = 100)]
    poll_ms: u16,
    /// Log every doorbell and interrupt.
    #[arg(long)]
    verbose: bool,
}

fn parse_u64(text: &str) -> Result<u64, String> {
    let text = text.replace('_', "");
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu-model: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> std::io::Result<()> {
    let local_size = args.local_mib << 20;
    let bar_size = shared_bar_size(local_size).ok_or_else(|| std::io::Error::other("local memory too large"))?;
    let bar = Arc::new(Mapping::create(&args.bar, bar_size)?);
    let ram = Arc::new(Mapping::create(&args.ram, args.ram_mib << 20)?);
    let regs = View::new(bar.clone(), 0, REG_BAR_SIZE).ok_or_else(|| std::io::Error::other("BAR too small"))?;
    let local = View::new(bar.clone(), LOCAL_MEMORY_OFFSET, local_size)
        .ok_or_else(|| std::io::Error::other("BAR too small"))?;
    let mut gpu = Gpu::new(regs, local, View::whole(ram), args.ram_base);
    gpu.reset();

    let vectors = args.vectors.max(1);
    let shm: OwnedFd = bar.file().try_clone()?.into();
    let mut server = Server::new(shm, vectors)?;
    let _ = std::fs::remove_file(&args.socket); // a stale socket from an earlier run
    let listener = UnixListener::bind(&args.socket)?;
    eprintln!(
        "gpu-model: listening on {} (BAR {} MiB, local memory {} MiB at BAR offset {:#x}, RAM {} MiB at {:#x}, {} vectors, model peer {})",
        args.socket.display(),
        bar_size >> 20,
        args.local_mib,
        LOCAL_MEMORY_OFFSET,
        args.ram_mib,
        args.ram_base,
        vectors,
        MODEL_PEER_ID,
    );

    let timeout = if args.poll_ms == 0 { PollTimeout::NONE } else { PollTimeout::from(args.poll_ms) };
    loop {
        // Ready flags: [listener, doorbells.., peers..].
        let ready: Vec<bool> = {
            let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            fds.extend(server.doorbells.iter().map(|d| PollFd::new(d.as_fd(), PollFlags::POLLIN)));
            fds.extend(server.peers.iter().map(|p| PollFd::new(p.stream.as_fd(), PollFlags::POLLIN)));
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            fds.iter().map(|f| f.any().unwrap_or(false)).collect()
        };
        let doorbell_count = server.doorbells.len();
        if ready[0] {
            let (stream, _) = listener.accept()?;
            match server.connect(stream) {
                Ok(id) => eprintln!("gpu-model: peer {id} connected"),
                Err(e) => eprintln!("gpu-model: handshake with a new peer failed: {e}"),
            }
        }
        let gone: Vec<u16> = server
            .peers
            .iter()
            .zip(&ready[1 + doorbell_count..])
            .filter(|(_, r)| **r)
            .filter(|(p, _)| {
                // Clients never send: readable means end of stream (or garbage, dropped too).
                let mut buf = [0u8; 8];
                !matches!((&p.stream).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            })
            .map(|(p, _)| p.id)
            .collect();
        for id in gone {
            eprintln!("gpu-model: peer {id} disconnected");
            server.disconnect(id);
        }
        for v in 0..doorbell_count {
            if server.take_doorbell(v) && args.verbose {
                eprintln!("gpu-model: doorbell {v}");
            }
        }
        // Doorbell or poll tick: run the ring until it is idle, stopped or faulted.
        loop {
            let outcome = gpu.process();
            if outcome.faulted {
                let r = |o| gpu.regs().read_u32(o).unwrap_or(0);
                eprintln!(
                    "gpu-model: GPU fault {} at {:#x} (command {:#010x} at {:#x})",
                    r(FAULT_STATUS),
                    u64::from(r(FAULT_ADDRESS_HI)) << 32 | u64::from(r(FAULT_ADDRESS_LO)),
                    r(FAULT_COMMAND),
                    u64::from(r(FAULT_COMMAND_ADDRESS_HI)) << 32 | u64::from(r(FAULT_COMMAND_ADDRESS_LO)),
                );
            }
            if args.verbose && outcome.commands > 0 {
                eprintln!("gpu-model: {} ring commands", outcome.commands);
            }
            if outcome.interrupt {
                if args.verbose {
                    eprintln!("gpu-model: interrupt (vector {INTERRUPT_VECTOR})");
                }
                server.interrupt_all(INTERRUPT_VECTOR);
            }
            if !outcome.more {
                break;
            }
        }
    }
}
