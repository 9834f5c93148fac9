"""Puts "docker.io/" back in front of image names in a `docker save` archive.

docker save writes "kindest/kindnetd:TAG" for docker.io/kindest/kindnetd:TAG;
`kind build node-image` compares the archive's tags with the full names it
needs and would try to pull the missing ones. Rewrites manifest.json and
repositories in place, and puts `repositories` first in the archive: kind
reads whichever of the two comes first, and from manifest.json only the first
image's tags, so a multi-image archive needs `repositories` (all tags) first.
Usage: fix-archive-names.py ARCHIVE.tar
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
    if not any(m.name == "repositories" for m, _ in members):
        manifest = json.loads(next(d for m, d in members if m.name == "manifest.json"))
        repos: dict = {}
        for entry in manifest:
            for t in entry.get("RepoTags") or []:
                repo, tag = t.rsplit(":", 1)
                repos.setdefault(repo, {})[tag] = entry["Config"].split("/")[-1].removesuffix(".json")
        info = tarfile.TarInfo("repositories")
        members.append((info, json.dumps(repos).encode()))
    members.sort(key=lambda md: md[0].name != "repositories")  # stable: the rest keeps its order
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
