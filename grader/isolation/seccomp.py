"""A classic-BPF seccomp filter for the grading sandbox, built without libseccomp.

It refuses (EPERM) the system calls a notebook never needs and a sandbox escape always does:
namespaces (unshare, setns, clone with CLONE_NEW*), mounts, ptrace and cross-process memory
access, bpf, keyrings, kernel modules, kexec, perf, userfaultfd, handle-based opens. clone3
answers ENOSYS so glibc falls back to clone, whose flags *can* be inspected. Calls through a
foreign ABI (i386, x32) kill the process. bubblewrap loads the program with `--seccomp FD`.
"""

from __future__ import annotations

import errno
import platform
import struct

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h)
LD_W_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
RET_ALLOW, RET_KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0 = 0, 4, 16

CLONE_NEW_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl)
X86_64_REFUSED = {
    "ptrace": 101, "personality": 135, "pivot_root": 155, "chroot": 161, "acct": 163, "mount": 165,
    "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}
X86_64_CLONE, X86_64_CLONE3 = 56, 435


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def supported() -> bool:
    return platform.machine() in ("x86_64", "AMD64")


def build_filter() -> bytes:
    """The compiled program (struct sock_filter[]), for x86_64 only."""
    if not supported():
        raise OSError(f"no seccomp filter for {platform.machine()}")
    eperm, enosys = RET_ERRNO | errno.EPERM, RET_ERRNO | errno.ENOSYS
    refused = sorted(X86_64_REFUSED.values())
    program = [
        _insn(LD_W_ABS, OFFSET_ARCH),
        _insn(JEQ, AUDIT_ARCH_X86_64, jt=1),
        _insn(RET, RET_KILL_PROCESS),
        _insn(LD_W_ABS, OFFSET_NR),
        _insn(JGE, X32_SYSCALL_BIT, jf=1),
        _insn(RET, RET_KILL_PROCESS),
    ]
    for number in refused:  # match → fall into the RET EPERM just after this JEQ
        program += [_insn(JEQ, number, jf=1), _insn(RET, eperm)]
    program += [
        _insn(JEQ, X86_64_CLONE3, jf=1),
        _insn(RET, enosys),
        _insn(JEQ, X86_64_CLONE, jf=3),
        _insn(LD_W_ABS, OFFSET_ARG0),  # low 32 bits of the flags
        _insn(JSET, CLONE_NEW_FLAGS, jf=1),
        _insn(RET, eperm),
        _insn(RET, RET_ALLOW),
    ]
    return b"".join(program)
