"""A list file is one stream: with several scan threads, or an importSince it cannot date, every
key of it is still copied.

Found by a hostile test: with scanThreadCount>1 the scan was split into one unit per folder,
but a manifest or URL list names no folders, so only the root unit ran and every key with a
'/' was dropped while the job said Succeed.
"""

from __future__ import annotations

from urllib.parse import quote

from conftest import assert_migrated, write_tree

NESTED = {
    "top.txt": b"top",
    "a/x.txt": b"x" * 10,
    "a/y.txt": b"y" * 20,
    "a/b/c/deep.txt": b"deep",
    "z/last.txt": b"last",
}


def _run(migration, job: dict) -> dict:
    migration.write_conf(job_props=dict(job, scanThreadCount="4", maxMultiThreadScanDepth="2"))
    migration.ok("submit", str(migration.job_file))
    migration.ok("start")
    return migration.wait_state(timeout=120)


def test_manifest_with_nested_keys_and_several_scan_threads(migration):
    write_tree(migration.src, NESTED)
    manifest = migration.dir / "keys.list"
    manifest.write_text("".join(k + "\n" for k in NESTED))
    s = _run(migration, {"srcType": "list", "listSrcType": "local", "listFilePath": str(manifest),
                         "srcPrefix": str(migration.src) + "/"})
    assert s["JobState"] == "Succeed", migration.stat_text("detail")
    assert s["Files"].startswith(f"{len(NESTED)}/{len(NESTED)} done"), s
    assert_migrated(migration.bucket, NESTED)


def test_url_list_with_nested_keys_and_several_scan_threads(migration, web_root):
    write_tree(web_root.root, NESTED)
    url_list = migration.dir / "urls.list"
    url_list.write_text("".join(f"{web_root.base}/ {quote(k)}\n" for k in NESTED))
    s = _run(migration, {"srcType": "http", "httpListFilePath": str(url_list), "srcPrefix": ""})
    assert s["JobState"] == "Succeed", migration.stat_text("detail")
    assert s["Files"].startswith(f"{len(NESTED)}/{len(NESTED)} done"), s
    assert_migrated(migration.bucket, NESTED)


def test_url_list_with_import_since_copies_what_it_cannot_date(migration, web_root):
    # A URL list gives no modification times; importSince must not drop every line unseen.
    write_tree(web_root.root, NESTED)
    url_list = migration.dir / "urls.list"
    url_list.write_text("".join(f"{web_root.base}/ {quote(k)}\n" for k in NESTED))
    s = _run(migration, {"srcType": "http", "httpListFilePath": str(url_list), "srcPrefix": "",
                         "importSince": "1700000000"})
    assert s["JobState"] == "Succeed", migration.stat_text("detail")
    assert s["Files"].startswith(f"{len(NESTED)}/{len(NESTED)} done"), s
    assert_migrated(migration.bucket, NESTED)
