"""Format sniffing and duration: real audio passes, anything else is refused with its reason."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mutagen.id3 import ID3, TIT2

from appview_api.audio.format import AudioInfo, UnsupportedAudio, probe, sniff

DATA = Path(__file__).parent / "data"


def write_wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x10" * int(seconds * rate))
    return path


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tone-3s.mp3", AudioInfo("mp3", "audio/mpeg", 3)),
        ("tone-3s.ogg", AudioInfo("ogg", "audio/ogg", 3)),
        ("tone-3s.flac", AudioInfo("flac", "audio/flac", 3)),
    ],
)
def test_real_samples(name: str, expected: AudioInfo) -> None:
    assert probe(DATA / name) == expected


def test_wav_duration_is_rounded(tmp_path: Path) -> None:
    assert probe(write_wav(tmp_path / "a.wav", 2.6)) == AudioInfo("wav", "audio/wav", 3)
    assert probe(write_wav(tmp_path / "b.wav", 2.4)) == AudioInfo("wav", "audio/wav", 2)


def test_mp3_behind_an_id3_tag(tmp_path: Path) -> None:
    path = tmp_path / "tagged.mp3"
    shutil.copy(DATA / "tone-3s.mp3", path)
    tag = ID3()
    tag.add(TIT2(encoding=3, text="Tagged"))
    tag.save(path)

    assert path.read_bytes()[:3] == b"ID3"
    assert probe(path) == AudioInfo("mp3", "audio/mpeg", 3)


def test_extension_is_ignored(tmp_path: Path) -> None:
    flac_named_mp3 = tmp_path / "song.mp3"
    shutil.copy(DATA / "tone-3s.flac", flac_named_mp3)
    wav_named_ogg = write_wav(tmp_path / "song.ogg", 1.0)

    assert probe(flac_named_mp3).file_type == "flac"
    assert probe(wav_named_ogg).file_type == "wav"


FLAC_BYTES = (DATA / "tone-3s.flac").read_bytes()
MP3_BYTES = (DATA / "tone-3s.mp3").read_bytes()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "the file is empty"),
        (b"hello, I am definitely an mp3\n", "not an mp3, wav, ogg or flac file"),
        (b"<html><body>404</body></html>", "not an mp3, wav, ogg or flac file"),
        (b"\xff\xfb", "not an mp3, wav, ogg or flac file"),
        (b"fLaC", "unreadable flac file: file said 1 bytes, read 0 bytes"),
        (FLAC_BYTES[:20], "unreadable flac file: file said 34 bytes, read 12 bytes"),
        (FLAC_BYTES[:114], "truncated flac file: no audio frames after its metadata"),
        (FLAC_BYTES[:116], "truncated flac file: less audio than one frame"),
        (FLAC_BYTES[:114] + b"\x00" * 4000, "truncated flac file: no audio frames after its metadata"),
        (MP3_BYTES[:10], "unreadable mp3 file: can't sync to MPEG frame"),
        (b"ID3\x03\x00\x00\x00\x00\x00\x00", "unreadable mp3 file: can't sync to MPEG frame"),
        (b"\xff\xfb\x90\x00" + bytes(2000), "unreadable mp3 file: can't sync to MPEG frame"),
        (b"RIFF\x00\x00\x00\x00WAVEjunkjunk", "unreadable wav file: Container chunk data size < 4"),
        (b"OggS" + b"x" * 100, "unreadable ogg file: version 120 unsupported"),
    ],
    ids=[
        "empty",
        "text",
        "html",
        "bare-sync",
        "flac-magic-only",
        "flac-cut-in-streaminfo",
        "flac-metadata-only",
        "flac-cut-in-first-frame",
        "flac-zeros-after-metadata",
        "mp3-cut",
        "id3-without-audio",
        "sync-then-zeros",
        "riff-junk",
        "ogg-junk",
    ],
)
def test_bad_files_are_refused(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "upload.mp3"
    path.write_bytes(content)

    with pytest.raises(UnsupportedAudio) as caught:
        probe(path)

    assert caught.value.reason == reason


def test_wav_without_frames_holds_no_audio(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedAudio) as caught:
        probe(write_wav(tmp_path / "silent.wav", 0))

    assert caught.value.reason == "the wav file holds no audio"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"OggS\x00\x02", "ogg"),
        (b"RIFF\x24\x00\x00\x00WAVE", "wav"),
        (b"ID3\x04\x00\x00\x00\x00\x01\x7f", "mp3"),
        (b"\xff\xfb\x90\x64", "mp3"),  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz
        (b"\xff\xe3\x18\xc4", "mp3"),  # MPEG-2.5 layer III, as SoX writes at 8 kHz
    ],
)
def test_sniff_known_heads(head: bytes, expected: str) -> None:
    assert sniff(head) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"RIFF\x24\x00\x00\x00AVI ",  # RIFF, but a video
        b"ID3\x05\x00\x00\x00\x00\x00\x00",  # unknown ID3 major version
        b"ID3\x03\x00\x00\x80\x00\x00\x00",  # size byte not syncsafe
        b"\xff\xeb\x90\x64",  # reserved MPEG version
        b"\xff\xfd\x90\x64",  # layer II, not mp3
        b"\xff\xfb\xf0\x64",  # invalid bitrate index
        b"\xff\xfb\x9c\x64",  # reserved sample rate
    ],
)
def test_sniff_rejects_near_misses(head: bytes) -> None:
    with pytest.raises(UnsupportedAudio) as caught:
        sniff(head)

    assert caught.value.reason == "not an mp3, wav, ogg or flac file"


@settings(max_examples=300, deadline=None)
@given(
    magic=st.sampled_from(
        [b"fLaC", b"OggS", b"RIFF\x10\x00\x00\x00WAVE", b"ID3\x03\x00\x00\x00\x00\x00\x10", b"\xff\xfb"]
    ),
    tail=st.binary(max_size=600),
)
def test_hostile_bytes_only_ever_raise_unsupported_audio(
    tmp_path_factory: pytest.TempPathFactory, magic: bytes, tail: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "upload"
    path.write_bytes(magic + tail)

    try:
        info = probe(path)
    except UnsupportedAudio as exc:
        assert exc.reason
    else:
        assert info.duration >= 0
        assert info.content_type.startswith("audio/")
