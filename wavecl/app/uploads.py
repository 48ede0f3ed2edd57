"""What the user gave the page, checked: the sentences and the video (a file, a zip or a folder of frames).

Bad input raises :class:`InputError` with a message in the user's terms, naming the upload by its file
name (never its server-side path): an unreadable or empty video, a video longer than the limit, an empty
sentence, an upload over the size limit (a zip: its frames unpacked), a frame that is not JPEG or PNG.
"""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from wavecl.app.config import MEGABYTE, AppConfig
from wavecl.data.paths import FRAME_SUFFIXES, is_hidden, is_listed_name
from wavecl.inference.predictor import open_video

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi")
"""Offered by the page's file picker; anything FFmpeg decodes is accepted."""
ARCHIVE_SUFFIX = ".zip"


class InputError(ValueError):
    """Something wrong with what the user gave; the message is shown on the page as it is."""


def parse_sentences(text: str | None, max_sentences: int) -> list[str]:
    """The sentences of the text box: one per non-blank line, surrounding spaces removed.

    Raises:
        InputError: no sentence, or more than ``max_sentences``.
    """
    sentences = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not sentences:
        raise InputError("Enter at least one sentence describing what to segment (one sentence per line).")
    if len(sentences) > max_sentences:
        raise InputError(f"{len(sentences)} sentences given; this server segments at most {max_sentences} at once.")
    return sentences


def _frame_name(path: str) -> str | None:
    """The file name of a frame inside an archive or folder, ``None`` for other files (and for the
    hidden copies archivers add, ``__MACOSX/`` and ``._name``): the rule of
    :func:`wavecl.data.paths.is_listed_name`, applied to every folder of the path."""
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if not parts or not is_listed_name(parts[-1], FRAME_SUFFIXES) or any(is_hidden(part) for part in parts):
        return None
    return parts[-1]


def _check_frame_names(names: list[str], source: str, max_frames: int) -> None:
    if not names:
        raise InputError(f"{source} holds no frames ({', '.join(FRAME_SUFFIXES)} files).")
    if len(names) > max_frames:
        raise InputError(f"{source} holds {len(names)} frames; this server accepts at most {max_frames} frames.")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"{source} holds several frames named {repeated[0]}; frame names must be unique.")


def extract_frames(archive: Path, destination: Path, max_frames: int, max_bytes: int) -> Path:
    """Unpack the frames of a zip into ``destination`` (flat, by file name).

    Args:
        archive: the zip; its ``.jpg``/``.jpeg``/``.png`` files at any depth are the frames.
        destination: an existing, empty folder.
        max_frames: most frames accepted.
        max_bytes: most bytes the frames may unpack to.

    Returns:
        ``destination``.

    Raises:
        InputError: not a zip, no frame, too many frames, two frames of one name, too many bytes.
    """
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{archive.name} is not a readable zip archive ({error}).") from error
    with bundle:
        members = [(info, _frame_name(info.filename)) for info in bundle.infolist() if not info.is_dir()]
        frames = [(info, name) for info, name in members if name is not None]
        _check_frame_names([name for _, name in frames], archive.name, max_frames)
        unpacked = sum(info.file_size for info, _ in frames)
        if unpacked > max_bytes:
            raise InputError(
                f"{archive.name} unpacks to {megabytes(unpacked)} of frames; "
                f"this server accepts at most {megabytes(max_bytes)}."
            )
        try:
            for info, name in frames:
                with bundle.open(info) as source, open(destination / name, "wb") as target:
                    shutil.copyfileobj(source, target)
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise InputError(f"{archive.name} is damaged: {error}") from error
    return destination


def collect_frames(files: Sequence[str], destination: Path, max_frames: int) -> Path:
    """Copy the frames of an uploaded folder into ``destination`` by file name; other files are ignored.

    Raises:
        InputError: no frame, too many frames, two frames of one name.
    """
    frames = [(path, _frame_name(path)) for path in files]
    named = [(path, name) for path, name in frames if name is not None]
    _check_frame_names([name for _, name in named], "The folder", max_frames)
    for path, name in named:
        shutil.copyfile(path, destination / name)
    return destination


def megabytes(count: float) -> str:
    """``count`` bytes in megabytes, with three significant digits (``"0.00413 MB"``, ``"152 MB"``)."""
    value = count / MEGABYTE
    return f"{value:.3g} MB" if value < 1000 else f"{value:.0f} MB"


def public_message(error: Exception, path: Path) -> str:
    """The error's message for the user, the server-side path of the upload replaced by its file name.

    When the error was caused by a system or FFmpeg error, only that error's text is kept: PyAV's
    ``[Errno 1094995529] Invalid data found when processing input: '/tmp/.../clip.mp4'`` reads
    ``Invalid data found when processing input``.
    """
    cause: BaseException = error
    while cause.__cause__ is not None:
        cause = cause.__cause__
    reason = getattr(cause, "strerror", None) or str(error)  # OSError's and PyAV's FFmpegError's text
    return reason.replace(str(path), path.name)


def video_input(upload: str | None, folder: Sequence[str] | None, work: Path, config: AppConfig) -> tuple[Path, str]:
    """The video to segment and the name to show for it.

    Args:
        upload: path of an uploaded video file or zip of frames.
        folder: paths of the files of an uploaded folder of frames.
        work: the request's folder; a zip's or folder's frames are copied into ``work/frames``.
        config: the limits (:attr:`AppConfig.max_upload_bytes`, :attr:`AppConfig.max_frames`).

    Returns:
        ``(video, name)``: a video file or a folder of frames, and the upload's file name (``"folder of
        frames"`` for a folder).

    Raises:
        InputError: neither or both given, too large, empty, or a bad zip or folder of frames.
    """
    if upload and folder:
        raise InputError("Give either a video (or zip of frames) or a folder of frames, not both.")
    if not upload and not folder:
        raise InputError("Upload a video, a zip of frames or a folder of frames first.")
    paths = [upload] if upload else list(folder or [])
    size = sum(Path(path).stat().st_size for path in paths)
    if size > config.max_upload_bytes:
        raise InputError(
            f"The upload is {megabytes(size)}; this server accepts at most {megabytes(config.max_upload_bytes)}."
        )
    if folder:
        frames = work / "frames"
        frames.mkdir()
        return collect_frames(paths, frames, config.max_frames), "folder of frames"
    path = Path(paths[0])
    if size == 0:
        raise InputError(f"{path.name} is empty (0 bytes).")
    if path.suffix.lower() == ARCHIVE_SUFFIX:
        frames = work / "frames"
        frames.mkdir()
        return extract_frames(path, frames, config.max_frames, config.max_upload_bytes), path.name
    return path, path.name


def check_length(video: Path, name: str, max_frames: int) -> int | None:
    """The frame count of ``video`` when the file records it (``None`` otherwise).

    Raises:
        InputError: the video cannot be opened, or records more than ``max_frames`` frames.
    """
    try:
        source = open_video(video)
    except (OSError, ValueError) as error:
        raise InputError(f"Cannot read {name} as a video: {public_message(error, video)}") from error
    if source.num_frames is not None and source.num_frames > max_frames:
        seconds = f" ({source.num_frames / source.fps:.1f} s at {source.fps:g} fps)" if source.fps else ""
        raise InputError(
            f"{name} has {source.num_frames} frames{seconds}; this server accepts at most "
            f"{max_frames} frames. Cut the video shorter and try again."
        )
    return source.num_frames
