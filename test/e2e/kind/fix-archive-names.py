"""Puts "docker.io/" back in front of image names in a `docker save` archive.

docker save writes "kindest/kindnetd:TAG" for docker.io/kindest/kindnetd:TAG;
`kind build node-image` compares the archive's tags with the full names it
needs and would try to pull the missing ones. Rewrites manifest.json and
repositories in place; usage: fix-archive-names.py ARCHIVE.tar
"""
import io
import json
import sys
import tarfile


def full(name: str) -> str:
    first = name.split("/", 1)[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return "docker.io/" + name if "/" in name else "docker.io/library/" + name


def main(path: str) -> None:
    with tarfile.open(path) as src:
        members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]
    out = []
    for m, data in members:
        if m.name == "manifest.json":
            doc = json.loads(data)
            for entry in doc:
                entry["RepoTags"] = [full(t) for t in entry.get("RepoTags") or []]
            data = json.dumps(doc).encode()
        elif m.name == "repositories":
            doc = json.loads(data)
            data = json.dumps({full(k): v for k, v in doc.items()}).encode()
        if data is not None:
            m.size = len(data)
        out.append((m, data))
    with tarfile.open(path + ".tmp", "w") as dst:
        for m, data in out:
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    import os

    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main(sys.argv[1])
