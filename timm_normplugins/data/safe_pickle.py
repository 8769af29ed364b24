""" Read a data pickle (CIFAR's python batches) without unpickling it.

``pickle.load`` calls whatever callable a file names, and even a restricted unpickler hands the file's
arguments to the callables it allows (numpy's dtype constructor builds corrupt dtypes that crash the
process; the C unpickler grows its memo to whatever index a file names). ``load_plain_pickle`` therefore
runs no unpickler: it interprets the pickle opcodes itself, accepting only the layout of the CIFAR-10/100
python batches and meta files:

* the file holds one dict whose keys are strings (or bytes);
* its values are ints, strings, bytes, lists of ints / strings / bytes (no nested containers), or
  uint8 arrays, which a file may only express as numpy's ``_reconstruct(ndarray, (0,), b'b')`` followed
  by the state ``(1, shape, dtype('u1'), fortran, raw bytes)``; ``dtype`` may only be called as
  ``dtype('u1', False, True)``. The array is built here with ``np.frombuffer``, after its byte count
  has been checked against its shape; no numpy function ever sees the file's arguments.
* protocols 2-4 (what Python 2's cPickle wrote CIFAR with, and what Python 3 / numpy 1.x-2.x write).

Every other opcode, global or type is refused, and so are files over ``MAX_FILE_BYTES``, more than
``MAX_ITEMS`` list items / dict entries, memo entries or stack depth, and parses running over
``time_limit`` seconds. Work and memory are linear in the file size. Errors are
``pickle.UnpicklingError`` with one line saying what and where (byte offset).
"""
import os
import pickle
import struct
import time
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np

__all__ = ['load_plain_pickle', 'MAX_FILE_BYTES', 'MAX_ITEMS']

MAX_FILE_BYTES = 1 << 28  # 256 MiB; CIFAR-100's train file, the largest, is 150 MiB
MAX_ITEMS = 1 << 22  # list items + dict entries + memo entries (CIFAR-100 train: ~150k)
MAX_STACK = 1 << 16  # pickle writes lists in batches of 1000 items
MAX_NDIM = 4

_RECONSTRUCT = ('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct')
_GLOBALS = {
    **{g: 'reconstruct' for g in _RECONSTRUCT},  # numpy 1.x writers (CIFAR's own files), numpy 2 writers
    ('numpy', 'ndarray'): 'ndarray',
    ('numpy', 'dtype'): 'dtype',
    ('_codecs', 'encode'): 'encode',  # how protocol 2 stores bytes under Python 3
}
_MARK = object()


class _Global:
    __slots__ = ('name',)

    def __init__(self, name: str):
        self.name = name


class _Uint8:
    """The one dtype a file may name: ``dtype('u1', False, True)``."""


class _ArrayStub:
    """``_reconstruct(ndarray, (0,), b'b')``: an array waiting for its state (BUILD)."""
    __slots__ = ('array',)

    def __init__(self):
        self.array = None


_SCALARS = (int, str, bytes)  # bool is an int


def _fail(pos: int, what: str):
    raise pickle.UnpicklingError(f'{what} (at byte {pos}); not the layout of a CIFAR python pickle')


class _Reader:
    def __init__(self, data: bytes, encoding: str, time_limit: float):
        self.data, self.pos, self.encoding = data, 0, encoding
        self.stack: List[Any] = []
        self.marks: List[int] = []
        self.memo: Dict[int, Any] = {}
        self.items = 0
        self.deadline = time.monotonic() + time_limit

    # ------------------------------------------------------------------------------------------- input
    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            _fail(self.pos, f'truncated: {n} bytes needed, {len(self.data) - self.pos} left')
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def line(self) -> str:
        end = self.data.find(b'\n', self.pos, self.pos + 256)
        if end < 0:
            _fail(self.pos, 'GLOBAL name without an end of line in 256 bytes')
        out = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return out.decode('ascii')
        except UnicodeDecodeError:
            _fail(self.pos, 'GLOBAL name is not ASCII')

    # ------------------------------------------------------------------------------------------- stack
    def push(self, value: Any):
        if len(self.stack) >= MAX_STACK:
            _fail(self.pos, f'more than {MAX_STACK} values on the pickle stack')
        self.stack.append(value)

    def pop(self) -> Any:
        if not self.stack or (self.marks and len(self.stack) == self.marks[-1]):
            _fail(self.pos, 'pickle stack underflow')
        return self.stack.pop()

    def pop_mark(self) -> List[Any]:
        if not self.marks:
            _fail(self.pos, 'no MARK before a multi-item opcode')
        start = self.marks.pop()
        out = self.stack[start:]
        del self.stack[start:]
        return out

    def count(self, n: int):
        self.items += n
        if self.items > MAX_ITEMS:
            _fail(self.pos, f'more than {MAX_ITEMS} list items, dict entries and memo entries')

    def string(self, raw: bytes):
        """A Python 2 ``str`` (SHORT_BINSTRING/BINSTRING), decoded as the caller asked."""
        return raw if self.encoding == 'bytes' else raw.decode('latin1')

    def unicode(self, raw: bytes) -> str:
        try:
            return raw.decode('utf-8')
        except UnicodeDecodeError:
            _fail(self.pos, 'a unicode string that is not UTF-8')

    # ------------------------------------------------------------------------------------------ values
    def tuple_of(self, values: List[Any]) -> tuple:
        for v in values:  # one level of nesting (an array state holds its shape tuple), no containers
            if isinstance(v, (list, dict, _ArrayStub, np.ndarray)) or \
                    (isinstance(v, tuple) and not all(isinstance(x, _SCALARS) for x in v)):
                _fail(self.pos, f'a tuple holding a {type(v).__name__}')
        return tuple(values)

    def append(self, target: Any, values: List[Any]):
        if not isinstance(target, list):
            _fail(self.pos, f'APPEND to a {type(target).__name__}')
        for v in values:
            if not isinstance(v, _SCALARS):
                _fail(self.pos, f'a list item of type {type(v).__name__} (lists hold ints, strings or bytes)')
        self.count(len(values))
        target.extend(values)

    def setitems(self, target: Any, values: List[Any]):
        if not isinstance(target, dict) or len(values) % 2:
            _fail(self.pos, f'SETITEM(S) on a {type(target).__name__}')
        for key, value in zip(values[::2], values[1::2]):
            if not isinstance(key, (str, bytes)):
                _fail(self.pos, f'a dict key of type {type(key).__name__}')
            if isinstance(value, _ArrayStub):
                if value.array is None:
                    _fail(self.pos, 'an array without its state')
                value = value.array
            elif not isinstance(value, _SCALARS + (list, np.ndarray)):
                _fail(self.pos, f'a dict value of type {type(value).__name__}')
            target[key] = value
        self.count(len(values) // 2)

    def reduce(self, func: Any, args: Any) -> Any:
        name = func.name if isinstance(func, _Global) else None
        if not isinstance(args, tuple):
            _fail(self.pos, 'REDUCE arguments are not a tuple')
        if name == 'encode':  # _codecs.encode(text, 'latin1'): bytes under protocol 2
            if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ('latin1', 'latin-1'):
                _fail(self.pos, '_codecs.encode called other than as encode(str, "latin1")')
            try:
                return args[0].encode('latin1')
            except UnicodeEncodeError:
                _fail(self.pos, '_codecs.encode of a string that is not latin-1')
        if name == 'dtype':
            if len(args) != 3 or args[0] not in ('u1', 'uint8', b'u1') or args[1:] not in ((False, True), (0, 1)):
                _fail(self.pos, f'numpy.dtype{args!r}: only uint8 arrays are allowed')
            return _Uint8()
        if name == 'reconstruct':
            if len(args) != 3 or not (isinstance(args[0], _Global) and args[0].name == 'ndarray') \
                    or args[1] != (0,) or args[2] not in (b'b', 'b'):
                _fail(self.pos, 'numpy _reconstruct called other than as _reconstruct(ndarray, (0,), b"b")')
            return _ArrayStub()
        _fail(self.pos, f'REDUCE of {type(func).__name__ if name is None else name}')

    def build(self, obj: Any, state: Any):
        if isinstance(obj, _Uint8):  # dtype state: (3, '|', None, None, None, -1, -1, 0) and alike
            if not isinstance(state, tuple) or not all(v is None or isinstance(v, _SCALARS) for v in state):
                _fail(self.pos, 'a dtype state that is not a tuple of plain values')
            return
        if not isinstance(obj, _ArrayStub) or obj.array is not None:
            _fail(self.pos, f'BUILD of a {type(obj).__name__}')
        if not (isinstance(state, tuple) and len(state) == 5 and state[0] == 1 and isinstance(state[1], tuple)
                and isinstance(state[2], _Uint8) and state[3] in (False, True)):
            _fail(self.pos, 'an array state other than (1, shape, dtype("u1"), fortran, data)')
        shape, raw = state[1], state[4]
        if len(shape) > MAX_NDIM or not all(type(s) is int and 0 <= s for s in shape):
            _fail(self.pos, f'array shape {shape!r}')
        if isinstance(raw, str):  # a Python 2 str read as latin-1 text
            try:
                raw = raw.encode('latin1')
            except UnicodeEncodeError:
                _fail(self.pos, 'array data that is not latin-1 text')
        if not isinstance(raw, bytes):
            _fail(self.pos, f'array data of type {type(raw).__name__}')
        size = 1
        for s in shape:
            size *= s
        if size != len(raw):
            _fail(self.pos, f'array of shape {shape} holds {len(raw)} bytes, not {size}')
        obj.array = np.frombuffer(raw, dtype=np.uint8).reshape(shape, order='F' if state[3] else 'C')

    # ------------------------------------------------------------------------------------------- loop
    def run(self) -> Any:
        if self.take(1) != b'\x80':
            _fail(0, 'not a binary pickle (no PROTO opcode)')
        proto = self.take(1)[0]
        if not 2 <= proto <= 4:
            _fail(1, f'pickle protocol {proto} (CIFAR files use 2; 3 and 4 are accepted)')
        ops = 0
        while True:
            ops += 1
            if ops % 4096 == 0 and time.monotonic() > self.deadline:
                _fail(self.pos, 'parsing took longer than its time limit')
            at = self.pos
            op = self.take(1)
            if op == b'.':  # STOP
                result = self.pop()
                if self.stack or self.marks:
                    _fail(at, 'values left on the stack at STOP')
                if not isinstance(result, dict):
                    _fail(at, f'the file holds a {type(result).__name__}, not a dict')
                if self.pos != len(self.data):
                    _fail(self.pos, f'{len(self.data) - self.pos} bytes after the end of the pickle')
                return result
            self.step(op, at)

    def step(self, op: bytes, at: int):
        push, pop = self.push, self.pop
        if op == b'}':
            push({})
        elif op == b']':
            push([])
        elif op == b')':
            push(())
        elif op == b'(':
            if len(self.marks) >= 64:
                _fail(at, 'too many nested MARKs')
            self.marks.append(len(self.stack))
        elif op == b'K':
            push(self.take(1)[0])
        elif op == b'M':
            push(self.unpack('<H'))
        elif op == b'J':
            push(self.unpack('<i'))
        elif op == b'\x8a':  # LONG1
            n = self.take(1)[0]
            if n > 8:
                _fail(at, f'a {n}-byte integer')
            push(int.from_bytes(self.take(n), 'little', signed=True))
        elif op == b'N':
            push(None)
        elif op == b'\x88':
            push(True)
        elif op == b'\x89':
            push(False)
        elif op == b'U':  # SHORT_BINSTRING
            push(self.string(self.take(self.take(1)[0])))
        elif op == b'T':  # BINSTRING
            push(self.string(self.take(self.unpack('<i'))))
        elif op == b'\x8c':  # SHORT_BINUNICODE
            push(self.unicode(self.take(self.take(1)[0])))
        elif op == b'X':  # BINUNICODE
            push(self.unicode(self.take(self.unpack('<I'))))
        elif op == b'C':  # SHORT_BINBYTES
            push(self.take(self.take(1)[0]))
        elif op == b'B':  # BINBYTES
            push(self.take(self.unpack('<I')))
        elif op in (b'q', b'r', b'\x94'):  # BINPUT, LONG_BINPUT, MEMOIZE
            index = self.take(1)[0] if op == b'q' else self.unpack('<I') if op == b'r' else len(self.memo)
            if not self.stack:
                _fail(at, 'PUT with an empty stack')
            if index not in self.memo:
                self.count(1)
            self.memo[index] = self.stack[-1]
        elif op in (b'h', b'j'):  # BINGET, LONG_BINGET
            index = self.take(1)[0] if op == b'h' else self.unpack('<I')
            if index not in self.memo:
                _fail(at, f'GET of memo entry {index}, which was never PUT')
            push(self.memo[index])
        elif op == b'\x95':  # FRAME (protocol 4): a length prefix, nothing to do
            if self.unpack('<Q') > len(self.data) - self.pos:
                _fail(at, 'a FRAME longer than the rest of the file')
        elif op in (b'c', b'\x93'):  # GLOBAL, STACK_GLOBAL
            if op == b'c':
                module, name = self.line(), self.line()
            else:
                name, module = pop(), pop()
                if not isinstance(module, str) or not isinstance(name, str):
                    _fail(at, 'STACK_GLOBAL of values that are not strings')
            if (module, name) not in _GLOBALS:
                _fail(at, f'global {module}.{name} is not allowed in a data file')
            push(_Global(_GLOBALS[(module, name)]))
        elif op == b'\x85':
            push(self.tuple_of([pop()]))
        elif op == b'\x86':
            b = pop()
            push(self.tuple_of([pop(), b]))
        elif op == b'\x87':
            c, b = pop(), pop()
            push(self.tuple_of([pop(), b, c]))
        elif op == b't':
            push(self.tuple_of(self.pop_mark()))
        elif op == b'R':
            args = pop()
            push(self.reduce(pop(), args))
        elif op == b'b':
            state = pop()
            self.build(self.stack[-1] if self.stack else None, state)
        elif op == b'a':
            value = pop()
            self.append(self.stack[-1] if self.stack else None, [value])
        elif op == b'e':
            values = self.pop_mark()
            self.append(self.stack[-1] if self.stack else None, values)
        elif op == b's':
            value, key = pop(), pop()
            self.setitems(self.stack[-1] if self.stack else None, [key, value])
        elif op == b'u':
            values = self.pop_mark()
            self.setitems(self.stack[-1] if self.stack else None, values)
        else:
            _fail(at, f'pickle opcode {op!r} is not allowed in a data file')


def load_plain_pickle(path: Union[str, Path], encoding: str = 'latin1', time_limit: float = 120.0) -> Dict[Any, Any]:
    """The dict a CIFAR-style pickle holds (see the module docstring for what is accepted).

    ``encoding``: how Python 2 ``str`` values are returned: ``'latin1'`` (as ``str``, like
    ``pickle.load(f, encoding='latin1')``) or ``'bytes'``. Raises ``pickle.UnpicklingError`` for anything
    else than the accepted layout, including truncated and oversized files; arrays are read-only views of
    the file's bytes.
    """
    if encoding not in ('latin1', 'bytes'):
        raise ValueError(f"encoding must be 'latin1' or 'bytes', got {encoding!r}")
    with open(path, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise pickle.UnpicklingError(f'{size} bytes, more than the {MAX_FILE_BYTES} a data pickle may have')
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise pickle.UnpicklingError(f'more than the {MAX_FILE_BYTES} bytes a data pickle may have')
    return _Reader(data, encoding, time_limit).run()
