"""One error hierarchy for NetBee; the CLI turns any NetBeeError into one line and exit status 2."""
from __future__ import annotations

import errno as _errno
import os


class NetBeeError(Exception):
    """Base of every error NetBee reports to the user."""


class UsageError(NetBeeError):
    """Bad command line input."""


class FilterError(UsageError):
    """A filter expression or option that cannot be compiled."""


class ObjectFileError(NetBeeError):
    """The BPF ELF object is malformed or uses something we do not support."""


class BTFError(NetBeeError):
    """BTF data is malformed or missing."""


class CoreRelocationError(NetBeeError):
    """A CO-RE relocation cannot be resolved against the target BTF."""


class NotSupportedError(NetBeeError):
    """The running kernel lacks a feature."""

    def __init__(self, feature: str, detail: str = "") -> None:
        self.feature = feature
        self.detail = detail
        super().__init__(f"{feature} is not supported by this kernel" + (f": {detail}" if detail else ""))


class SyscallError(NetBeeError):
    """A system call failed; names the call and the errno."""

    def __init__(self, call: str, errno: int, msg: str = "") -> None:
        self.call = call
        self.errno = errno
        name = _errno.errorcode.get(errno, str(errno))
        text = f"{call} failed: {name} ({os.strerror(errno)})"
        super().__init__(text + (f": {msg}" if msg else ""))


class VerifierError(NetBeeError):
    """The verifier rejected a program; carries the log."""

    def __init__(self, program: str, log: str, errno: int = 0) -> None:
        self.program = program
        self.log = log
        self.errno = errno
        tail = "\n".join(log.strip().splitlines()[-20:])
        super().__init__(f"verifier rejected program {program!r}:\n{tail}")


class AttachError(NetBeeError):
    """A program could not be attached to its target."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"cannot attach to {target}: {reason}")
