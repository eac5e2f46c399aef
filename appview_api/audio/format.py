"""What an uploaded file really is: its format from its own bytes, its length from mutagen.

The extension and the declared content type come from the client and are ignored: a text file named
`.mp3` must not reach storage with an audio content type. `sniff` is pure (bytes in, format out);
`probe` reads a file on disk and blocks, so async callers run it in a worker thread.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

from mutagen import FileType, MutagenError
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE

from appview_api.errors import UnsupportedAudio

CONTENT_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "ogg": "audio/ogg", "flac": "audio/flac"}
HEAD_BYTES = 12

_PARSERS: dict[str, tuple[type[FileType], ...]] = {
    "mp3": (MP3,),
    "wav": (WAVE,),
    "ogg": (OggVorbis, OggOpus, OggFLAC, OggSpeex),
    "flac": (FLAC,),
}
# mutagen's own errors, plus what its parsers let slip on hostile bytes.
_PARSE_ERRORS = (MutagenError, EOFError, struct.error, ValueError, IndexError, KeyError, OverflowError)


@dataclass(frozen=True)
class AudioInfo:
    file_type: str
    content_type: str
    duration: int


def sniff(head: bytes) -> str:
    """The format named by the file's first bytes (at least HEAD_BYTES of them when the file has that many)."""
    if not head:
        raise UnsupportedAudio("the file is empty")
    if head.startswith(b"fLaC"):
        return "flac"
    if head.startswith(b"OggS"):
        return "ogg"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if _is_id3v2(head) or _is_mpeg_audio_frame(head):
        return "mp3"
    raise UnsupportedAudio("not an mp3, wav, ogg or flac file")


def probe(path: Path) -> AudioInfo:
    """Sniff the format, then let mutagen read the stream: a file that only starts right is refused too."""
    with path.open("rb") as file:
        head = file.read(HEAD_BYTES)
    file_type = sniff(head)
    audio = _parse(path, file_type)
    if file_type == "flac":
        _check_flac_frames(path)
    length = getattr(audio.info, "length", 0) or 0
    if not math.isfinite(length) or length <= 0:
        raise UnsupportedAudio(f"the {file_type} file holds no audio")
    return AudioInfo(file_type, CONTENT_TYPES[file_type], round(length))


def _parse(path: Path, file_type: str) -> FileType:
    failure = "no stream found"
    for parser in _PARSERS[file_type]:
        try:
            return parser(path)
        except _PARSE_ERRORS as exc:
            failure = str(exc) or type(exc).__name__
    raise UnsupportedAudio(f"unreadable {file_type} file: {failure}")


def _check_flac_frames(path: Path) -> None:
    """mutagen reads only FLAC's metadata: a file cut right after it would pass. Require audio frames
    behind the metadata: a frame sync code, and at least STREAMINFO's smallest frame size of bytes."""
    with path.open("rb") as file:
        size = file.seek(0, 2)
        position, min_frame = 4, 0
        while True:
            file.seek(position)
            header = file.read(4)
            if len(header) < 4:
                raise UnsupportedAudio("truncated flac file: its metadata is cut short")
            block_size = int.from_bytes(header[1:4], "big")
            if header[0] & 0x7F == 0:  # STREAMINFO: its first fields are the block sizes, then the frame sizes
                min_frame = int.from_bytes(file.read(7)[4:7], "big")
            position += 4 + block_size
            if header[0] & 0x80:  # the last metadata block
                break
        file.seek(position)
        sync = file.read(2)
    if len(sync) < 2 or sync[0] != 0xFF or sync[1] & 0xFE != 0xF8:
        raise UnsupportedAudio("truncated flac file: no audio frames after its metadata")
    if size - position < min_frame:
        raise UnsupportedAudio("truncated flac file: less audio than one frame")


def _is_id3v2(head: bytes) -> bool:
    # "ID3", major version 2-4, a revision byte, flags, then four 7-bit ("syncsafe") size bytes.
    return (
        len(head) >= 10
        and head.startswith(b"ID3")
        and head[3] in (2, 3, 4)
        and head[4] != 0xFF
        and all(b < 0x80 for b in head[6:10])
    )


def _is_mpeg_audio_frame(head: bytes) -> bool:
    """An MPEG layer III frame header: 11 sync bits, then no field holding its reserved or invalid value."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    bitrate = head[2] >> 4
    sample_rate = (head[2] >> 2) & 0b11
    return version != 0b01 and layer == 0b01 and bitrate != 0b1111 and sample_rate != 0b11
