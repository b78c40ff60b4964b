#!/usr/bin/env python3
"""Manual end-to-end smoke of the GPU model under QEMU (x86 q35 driven by qtest, no guest code).

Usage: python3 qtest_smoke.py PATH/TO/gpu-model [WORKDIR]

Starts the model (doorbell only: --poll-ms 0), starts QEMU with ivshmem-doorbell and a shared
memory-backend-file, programs the PCI BARs and MSI-X entry 0 (address 0x3000 in RAM, data
0xabcd), maps a ring and two surfaces in the GTT, submits MI_STORE_DATA_IMM + XY_COLOR_BLT +
MI_USER_INTERRUPT, rings the model's doorbell and prints what landed. Expect:
  after doorbell: head 52 mem 0x12345678 SEQNO 1 INT_STATUS 1 local 0xff00ff00 MSI-X write at 0x3000 0xabcd
Not part of any test suite. QEMU takes ~1-2 s after start to register the server's peer
eventfds; a doorbell rung earlier is lost (SETTLE, default 2 s, waits that out).
"""
import subprocess, sys, time, os, tempfile
binary = sys.argv[1]
d = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="gpu-model-smoke-")
for f in ["gpu.sock", "ram", "bar"]:
    try: os.remove(f"{d}/{f}")
    except FileNotFoundError: pass
model = subprocess.Popen([binary, "--socket", f"{d}/gpu.sock", "--bar", f"{d}/bar",
    "--local-mib", "64", "--ram", f"{d}/ram", "--ram-mib", "256", "--ram-base", "0", "--poll-ms", "0", "--verbose"],
    stderr=open(f"{d}/model.log", "w"))
while not os.path.exists(f"{d}/gpu.sock"): time.sleep(0.02)
q = subprocess.Popen(["qemu-system-x86_64", "-M", "q35", "-m", "256M", "-qtest", "stdio", "-display", "none", "-qtest-log", "/dev/null",
    "-nodefaults", "-object", f"memory-backend-file,id=gpu-ram,mem-path={d}/ram,share=on,size=256M", "-machine", "memory-backend=gpu-ram",
    "-chardev", f"socket,path={d}/gpu.sock,id=gpu", "-device", "ivshmem-doorbell,chardev=gpu,vectors=1"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(f"{d}/qemu.err", "w"), text=True, bufsize=1)
def cmd(c):
    if os.environ.get('TRACE'): print('>', c, flush=True)
    q.stdin.write(c + "\n"); q.stdin.flush()
    while True:
        line = q.stdout.readline().strip()
        if line.startswith("OK") or line.startswith("FAIL") or line.startswith("ERR"):
            if not line.startswith("OK"): sys.exit(f"{c}: {line}")
            return int(line.split()[1], 16) if len(line.split()) > 1 else None
def cfg(reg, val=None, size="l"):
    cmd(f"outl 0xcf8 {0x80000800 | reg:#x}")
    if val is None: return cmd(f"in{size} {0xcfc + (reg & 3):#x}")
    cmd(f"out{size} {0xcfc + (reg & 3):#x} {val:#x}")
time.sleep(float(os.environ.get("SETTLE", "2")))
print("vendor/device", hex(cfg(0)))
BAR0, BAR1, BAR2 = 0xd0000000, 0xd0001000, 0xc0000000
cfg(0x10, BAR0); cfg(0x14, BAR1); cfg(0x18, BAR2 | 0xc); cfg(0x1c, 0); cfg(0x04, 0x6, "w")
# MSI-X capability
cap = cfg(0x34) & 0xfc
for _ in range(8):
    hdr = cfg(cap)
    if hdr & 0xff == 0x11: break
    cap = (hdr >> 8) & 0xfc
table = cfg(cap + 4)
print("msix cap", hex(cap), "table", hex(table))
tb = BAR1 + (table & ~7)
cmd(f"writel {tb:#x} 0x3000"); cmd(f"writel {tb+4:#x} 0"); cmd(f"writel {tb+8:#x} 0xabcd"); cmd(f"writel {tb+12:#x} 0")
ctl = cfg(cap) >> 16
cfg(cap, (cfg(cap) & 0xffff) | ((ctl | 0x8000) << 16))
print("IVPosition", cmd(f"readl {BAR0+8:#x}"))
print("GPU_ID", hex(cmd(f"readl {BAR2:#x}")), "LMEM", hex(cmd(f"readl {BAR2+8:#x}")))
GTT = BAR2 + 0x100000
cmd(f"writeq {GTT:#x} {0x400000 | 1:#x}")       # graphics page 0 -> RAM 0x400000 (ring)
cmd(f"writeq {GTT+8:#x} {0x500000 | 1:#x}")     # graphics page 1 -> RAM 0x500000
cmd(f"writeq {GTT+16:#x} {0x5000 | 3:#x}")     # graphics page 2 -> local memory 0x5000
ring = [0x10000002, 0x1000, 0, 0x12345678,     # MI_STORE_DATA_IMM -> page 1
        0x54300005, (3 << 24) | (0xf0 << 16) | 64, 0, (2 << 16) | 4, 0x2000, 0, 0xff00ff00,  # XY_COLOR_BLT 4x2 into local
        0x01000000, 0]                          # MI_USER_INTERRUPT, MI_NOOP
for i, dw in enumerate(ring): cmd(f"writel {0x400000 + 4*i:#x} {dw:#x}")
cmd(f"writel {BAR2+0x104:#x} 1")   # INT_ENABLE user
cmd(f"writel {BAR2+0x22038:#x} 0"); cmd(f"writel {BAR2+0x2203c:#x} 1"); cmd(f"writel {BAR2+0x22030:#x} {4*len(ring):#x}")
time.sleep(0.3)
print("before doorbell: head", cmd(f"readl {BAR2+0x22034:#x}"), "mem", hex(cmd("readl 0x500000")))
cmd(f"writel {BAR0+12:#x} 0")      # doorbell: peer 0 (the model), vector 0
print("IntrStatus", cmd(f"readl {BAR0+4:#x}"))
time.sleep(0.3)

print("after doorbell: head", cmd(f"readl {BAR2+0x22034:#x}"), "mem", hex(cmd("readl 0x500000")),
      "SEQNO", cmd(f"readl {BAR2+0x108:#x}"), "INT_STATUS", cmd(f"readl {BAR2+0x100:#x}"),
      "local", hex(cmd(f"readl {BAR2+0x200000+0x5000+64+12:#x}")), "MSI-X write at 0x3000", hex(cmd("readl 0x3000")))
q.stdin.close(); q.kill(); q.wait(); model.kill(); model.wait()
print(open(f"{d}/model.log").read())
