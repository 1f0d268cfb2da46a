"""``m3rcr download sen12mscr`` against a local HTTP server on 127.0.0.1 serving tiny archives built here."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from m3rcr.cli import main
from m3rcr.data import download as dl
from m3rcr.data.download import DownloadOptions, download_sen12mscr, select_archives
from m3rcr.errors import DataError


def make_archive(folder: str, seed: int = 0, extra: dict[str, bytes] | None = None) -> bytes:
    """A tar.gz in the official layout: ``folder/<kind>_<roi>/<folder>_<roi>_p<patch>.tif`` (random bytes)."""
    rng = np.random.default_rng(seed)
    kind = folder.split("_", 2)[2]  # s1, s2, s2_cloudy
    members = {f"{folder}/{kind}_{roi}/{folder}_{roi}_p{p}.tif": rng.bytes(3000)
               for roi in (1, 2) for p in (10, 11)}
    members.update(extra or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Handler(BaseHTTPRequestHandler):
    """Serves ``/download?path=/&files=NAME`` with Range support; misbehaves as the server's settings ask."""

    server: Any

    def do_GET(self) -> None:
        srv = self.server
        name = parse_qs(urlsplit(self.path).query).get("files", [""])[0]
        rng = self.headers.get("Range")
        srv.requests.append((name, rng))
        data = srv.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and not srv.ignore_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in srv.drop_once or name in srv.always_drop:  # half the body, then the connection goes away
            srv.drop_once.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Server(NamedTuple):
    url: str
    httpd: Any

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self.httpd.requests


ARCHIVES = {a.name: make_archive(a.folder, seed=i) for i, a in enumerate(select_archives())}


@pytest.fixture()
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files = dict(ARCHIVES)
    httpd.requests, httpd.drop_once, httpd.always_drop, httpd.ignore_range = [], set(), set(), False
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{httpd.server_address[1]}/s/test", httpd)
    httpd.shutdown()
    httpd.server_close()


class Usage(NamedTuple):
    total: int
    used: int
    free: int


@pytest.fixture(autouse=True)
def ample_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The size table asks for hundreds of GB; the tiny test archives need none of it."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**15, 0, 10**15))


def options(server: Server, **kw: Any) -> DownloadOptions:
    return DownloadOptions(**{"base_url": server.url, "progress": False, "backoff": 0.0, "chunk_size": 1024,
                              "timeout": 10.0, **kw})


SPRING_S1 = "ROIs1158_spring_s1.tar.gz"


def test_full_download_extraction_and_manifest(server: Server, tmp_path: Path) -> None:
    root = tmp_path / "sen12mscr"
    result = download_sen12mscr(root, options(server))
    assert len(result.downloaded) == 12 and not result.skipped
    tif = root / "ROIs1158_spring_s1" / "s1_1" / "ROIs1158_spring_s1_1_p10.tif"
    assert tif.stat().st_size == 3000
    assert sorted(p.name for p in root.iterdir()) == sorted([a.folder for a in select_archives()]
                                                            + ["download_manifest.json"])
    manifest = json.loads((root / "download_manifest.json").read_text())
    entry = manifest["archives"][SPRING_S1]
    assert entry["size"] == len(ARCHIVES[SPRING_S1])
    assert entry["sha256"] == hashlib.sha256(ARCHIVES[SPRING_S1]).hexdigest()
    assert entry["url"] == f"{server.url}/download?path=/&files={SPRING_S1}"
    assert entry["files"] == 4 and entry["extracted_bytes"] == 12000 and entry["archive"] is None
    assert entry["downloaded"].endswith("+00:00")


def test_resume_after_dropped_connection(server: Server, tmp_path: Path) -> None:
    server.httpd.drop_once.add(SPRING_S1)
    download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",)))
    (first, r1), (again, r2) = server.requests
    assert first == again == SPRING_S1 and r1 is None
    assert r2 == f"bytes={len(ARCHIVES[SPRING_S1]) // 2}-"  # resumed where the connection dropped
    sha = json.loads((tmp_path / "download_manifest.json").read_text())["archives"][SPRING_S1]["sha256"]
    assert sha == hashlib.sha256(ARCHIVES[SPRING_S1]).hexdigest()


def test_resume_an_earlier_runs_partial_file(server: Server, tmp_path: Path) -> None:
    part = tmp_path / ".partial" / SPRING_S1
    part.parent.mkdir()
    part.write_bytes(ARCHIVES[SPRING_S1][:1000])
    download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",)))
    assert server.requests == [(SPRING_S1, "bytes=1000-")]
    sha = json.loads((tmp_path / "download_manifest.json").read_text())["archives"][SPRING_S1]["sha256"]
    assert sha == hashlib.sha256(ARCHIVES[SPRING_S1]).hexdigest()
    assert not (tmp_path / ".partial").exists()


def test_server_ignoring_range_restarts(server: Server, tmp_path: Path) -> None:
    server.httpd.ignore_range = True
    server.httpd.drop_once.add(SPRING_S1)
    download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",)))
    assert [r for _, r in server.requests] == [None, f"bytes={len(ARCHIVES[SPRING_S1]) // 2}-"]
    entry = json.loads((tmp_path / "download_manifest.json").read_text())["archives"][SPRING_S1]
    assert entry["size"] == len(ARCHIVES[SPRING_S1])
    assert entry["sha256"] == hashlib.sha256(ARCHIVES[SPRING_S1]).hexdigest()


def test_connection_that_keeps_dropping_fails_and_keeps_the_bytes(server: Server, tmp_path: Path) -> None:
    server.httpd.always_drop.add(SPRING_S1)
    with pytest.raises(DataError, match=r"files=ROIs1158_spring_s1\.tar\.gz: download failed: connection closed "
                                        r"after \d+ of \d+ bytes; \d+ bytes kept in .*, run again to resume"):
        download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",), retries=2))
    assert not (tmp_path / "ROIs1158_spring_s1").exists()
    part = tmp_path / ".partial" / SPRING_S1
    assert part.read_bytes() == ARCHIVES[SPRING_S1][: part.stat().st_size]  # kept for the next run
    size = len(ARCHIVES[SPRING_S1])
    assert len(server.requests) > 3 and part.stat().st_size < size  # progress earns fresh attempts
    server.httpd.always_drop.clear()
    download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",)))
    assert (tmp_path / "ROIs1158_spring_s1").is_dir()


def test_truncated_archive_is_refused_and_not_extracted(server: Server, tmp_path: Path) -> None:
    data = ARCHIVES[SPRING_S1]
    server.httpd.files[SPRING_S1] = data[: len(data) // 2]  # the server itself holds half an archive
    with pytest.raises(DataError, match=rf"{SPRING_S1}: truncated or corrupt archive"):
        download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",)))
    assert not (tmp_path / "ROIs1158_spring_s1").exists()
    assert not (tmp_path / "download_manifest.json").exists()
    assert not (tmp_path / ".partial" / SPRING_S1).exists()  # a corrupt archive is not resumed


def test_archive_truncated_just_before_the_gzip_trailer(server: Server, tmp_path: Path) -> None:
    server.httpd.files[SPRING_S1] = ARCHIVES[SPRING_S1][:-4]  # every tar member reads; the gzip length is gone
    with pytest.raises(DataError, match="truncated or corrupt"):
        download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",)))
    assert not (tmp_path / "ROIs1158_spring_s1").exists()


@pytest.mark.parametrize("bad", ["../evil.txt", "/tmp/evil.txt", "ROIs1158_spring_s1/../../evil.txt",
                                 "elsewhere/file.txt"])
def test_unsafe_or_foreign_members_are_refused(server: Server, tmp_path: Path, bad: str) -> None:
    server.httpd.files[SPRING_S1] = make_archive("ROIs1158_spring_s1", extra={bad: b"x"})
    root = tmp_path / "root"
    with pytest.raises(DataError, match=rf"{SPRING_S1}: (unsafe member refused|member .* lies outside)"):
        download_sen12mscr(root, options(server, seasons=("spring",), modalities=("s1",)))
    assert not (tmp_path / "evil.txt").exists() and not (root / "ROIs1158_spring_s1").exists()


def test_link_leaving_root_is_refused(server: Server, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("ROIs1158_spring_s1/s1_1/link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../../outside"
        tar.addfile(link)
    server.httpd.files[SPRING_S1] = buf.getvalue()
    with pytest.raises(DataError, match="unsafe member refused"):
        download_sen12mscr(tmp_path / "root", options(server, seasons=("spring",), modalities=("s1",)))


def test_not_enough_disk_space_is_refused_before_downloading(server: Server, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 5 * 10**9, 5 * 10**9))
    root = tmp_path / "new" / "root"
    with pytest.raises(DataError, match=r"not enough free disk space: 3 archive\(s\) need about .* GB .* only "
                                        r"5\.0 GB is free"):
        download_sen12mscr(root, options(server, seasons=("spring",)))
    assert server.requests == [] and not root.exists()


def test_space_needed_counts_partial_bytes_and_kept_archives(tmp_path: Path) -> None:
    archives = select_archives(["winter"], ["s1", "s2"])
    s1, s2 = (a.table_bytes for a in archives)
    assert s1 == 9_460_956 * 512
    extracted = round(s1 * dl.EXTRACTED_RATIO) + round(s2 * dl.EXTRACTED_RATIO)
    assert dl.space_needed(tmp_path, archives, keep_archives=False) == (s1 + s2, extracted + s2)
    assert dl.space_needed(tmp_path, archives, keep_archives=True) == (s1 + s2, extracted + s1 + s2)
    (tmp_path / ".partial").mkdir()
    (tmp_path / ".partial" / archives[1].name).write_bytes(b"x" * 100)
    assert dl.space_needed(tmp_path, archives, keep_archives=False)[0] == s1 + s2 - 100


def test_size_table_sums_to_the_published_total() -> None:
    total = sum(a.table_bytes for a in select_archives())
    assert 240e9 < total < 242e9  # "about 241 GB"


def test_rerun_downloads_nothing(server: Server, tmp_path: Path) -> None:
    opts = options(server, seasons=("fall",))
    download_sen12mscr(tmp_path, opts)
    before = (tmp_path / "download_manifest.json").read_text()
    server.requests.clear()
    result = download_sen12mscr(tmp_path, opts)
    assert server.requests == [] and not result.downloaded and len(result.skipped) == 3
    assert (tmp_path / "download_manifest.json").read_text() == before


def test_folder_without_manifest_entry_is_refused(server: Server, tmp_path: Path) -> None:
    (tmp_path / "ROIs1158_spring_s1").mkdir()
    with pytest.raises(DataError, match="ROIs1158_spring_s1: exists but download_manifest.json has no entry"):
        download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",)))
    assert server.requests == []


def test_seasons_and_modalities_select_archives(server: Server, tmp_path: Path) -> None:
    names = [a.name for a in select_archives(["winter", "spring"], ["s2_cloudy", "s1"])]
    assert names == ["ROIs1158_spring_s1.tar.gz", "ROIs1158_spring_s2_cloudy.tar.gz",
                     "ROIs2017_winter_s1.tar.gz", "ROIs2017_winter_s2_cloudy.tar.gz"]
    with pytest.raises(ValueError, match="unknown season autumn"):
        select_archives(["autumn"])
    download_sen12mscr(tmp_path, options(server, seasons=("winter",), modalities=("s2_cloudy",)))
    assert [name for name, _ in server.requests] == ["ROIs2017_winter_s2_cloudy.tar.gz"]
    assert (tmp_path / "ROIs2017_winter_s2_cloudy" / "s2_cloudy_1").is_dir()


def test_keep_archives_and_verify(server: Server, tmp_path: Path) -> None:
    opts = options(server, seasons=("summer",), modalities=("s2",), keep_archives=True)
    download_sen12mscr(tmp_path, opts)
    kept = tmp_path / "archives" / "ROIs1868_summer_s2.tar.gz"
    assert kept.read_bytes() == ARCHIVES[kept.name]
    verify = dataclasses.replace(opts, verify=True)
    assert download_sen12mscr(tmp_path, verify).verified == [kept.name]
    kept.write_bytes(b"\0" + kept.read_bytes()[1:])
    with pytest.raises(DataError, match="size or SHA-256 differs"):
        download_sen12mscr(tmp_path, verify)
    kept.write_bytes(ARCHIVES[kept.name])
    next((tmp_path / "ROIs1868_summer_s2").rglob("*.tif")).unlink()
    with pytest.raises(DataError, match=r"ROIs1868_summer_s2: 3 files, 9000 bytes, but 4 files, 12000 bytes"):
        download_sen12mscr(tmp_path, verify)


def test_http_error_names_the_url(server: Server, tmp_path: Path) -> None:
    del server.httpd.files[SPRING_S1]
    with pytest.raises(DataError, match=r"files=ROIs1158_spring_s1\.tar\.gz: HTTP 404"):
        download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",)))


def test_plain_progress_line_has_rate_and_time_left() -> None:
    bar = dl._PlainBytes("x.tar.gz", total=2_000_000, initial=500_000)
    bar.start -= 10  # 10 s ago
    bar.n = 1_500_000
    assert bar._line() == "x.tar.gz: 1.5 MB/2.0 MB, 100.0 kB/s, 5 s left"


def test_cli(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "data"
    argv = ["download", "sen12mscr", str(root), "--base-url", server.url, "--seasons", "spring", "--modalities",
            "s1", "s2", "--quiet"]
    assert main(argv) == 0
    assert (root / "ROIs1158_spring_s2" / "s2_2" / "ROIs1158_spring_s2_2_p11.tif").is_file()
    assert capsys.readouterr().out.strip() == f"{root}: downloaded 2, already there 0"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(1, 1, 0))
    assert main([*argv[:-1], "s2_cloudy"]) == 2
    assert "m3rcr download: error:" in capsys.readouterr().err
    assert main([*argv, "--verify"]) == 0  # nothing left to fetch: no space needed
    assert "verified 2" in capsys.readouterr().out


def test_complete_partial_file_is_not_fetched_again(server: Server, tmp_path: Path) -> None:
    part = tmp_path / ".partial" / SPRING_S1
    part.parent.mkdir()
    part.write_bytes(ARCHIVES[SPRING_S1])  # downloaded in full, then the run was stopped before extraction
    download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",), progress=True))
    assert server.requests == [(SPRING_S1, f"bytes={len(ARCHIVES[SPRING_S1])}-")]  # answered 416
    assert (tmp_path / "ROIs1158_spring_s1" / "s1_2").is_dir()


def test_progress_and_log_lines(server: Server, tmp_path: Path) -> None:
    lines: list[str] = []
    download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",), progress=True,
                                         log=lines.append))
    assert lines[0].startswith(f"downloading {SPRING_S1} from http://127.0.0.1:")
    assert lines[1] == f"verifying and extracting {SPRING_S1}"


def test_server_that_refuses_connections(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = DownloadOptions(base_url=f"http://127.0.0.1:{port}", seasons=("spring",), modalities=("s1",),
                           progress=False, retries=1, backoff=0.0)
    with pytest.raises(DataError, match=r"download failed: .*; nothing received"):
        download_sen12mscr(tmp_path / "root", opts)
    assert list((tmp_path / "root").iterdir()) == []


def test_terminal_bar_resumes_after_a_drop(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dl, "is_terminal", lambda: True)  # the tqdm bar, with rate and ETA
    server.httpd.drop_once.add(SPRING_S1)
    download_sen12mscr(tmp_path, options(server, seasons=("spring",), modalities=("s1",), progress=True))
    assert (tmp_path / "ROIs1158_spring_s1").is_dir()
