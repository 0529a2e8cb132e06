"""The datasets ``embudget data fetch`` can download: canonical public sources, the checksums
of the exact files, and licence notes (:mod:`embudget.data.fetch` downloads and checks them)."""

from __future__ import annotations

from dataclasses import dataclass

_LIGHTGCN = (
    "https://raw.githubusercontent.com/kuandeng/LightGCN/"
    "b067ec05f16a24e0e1efe63cd82385f0c469af20/Data"
)
_LIGHTGCN_PYTORCH = (
    "https://raw.githubusercontent.com/gusye1234/LightGCN-PyTorch/"
    "947ca2b3b1d2d3545b114145710cb06c4e57b3d2/data"
)


@dataclass(frozen=True)
class Download:
    """One file to download.

    Attributes:
        filename: its name (in the dataset folder when it is not an archive).
        urls: where to get it, tried in order.
        sha256: sha256 of its bytes.
        git_blob: its git blob id (sha1 of ``blob <size>\\0`` + content) in the source
            repository, checked where no sha256 of the file is published.
        size: its length in bytes, when recorded (a longer download is cut off).
        members: (member path in the archive, file name in the dataset folder) to unpack;
            empty: the file is not an archive and is kept as it is.
    """

    filename: str
    urls: tuple[str, ...]
    sha256: str | None = None
    git_blob: str | None = None
    size: int | None = None
    members: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.sha256 is None and self.git_blob is None:
            raise ValueError(f"{self.filename}: a download needs a sha256 or a git blob id")

    def targets(self) -> tuple[str, ...]:
        """The file names this download puts into the dataset folder."""
        return tuple(t for _, t in self.members) if self.members else (self.filename,)


@dataclass(frozen=True)
class RemoteDataset:
    """A dataset that :func:`embudget.data.fetch.fetch_dataset` can download.

    Attributes:
        name: the folder name, and the name ``--dataset`` takes.
        fmt: the file format of the folder (:mod:`embudget.data.formats`).
        downloads: the files to download.
        origin: where the data comes from and who preprocessed it.
        licence: the terms of use, in short.
    """

    name: str
    fmt: str
    downloads: tuple[Download, ...]
    origin: str
    licence: str

    def files(self) -> tuple[str, ...]:
        """Every file name the dataset folder holds (besides SHA256SUMS and SOURCE.json)."""
        return tuple(t for d in self.downloads for t in d.targets())


def _lightgcn_file(base: str, path: str, sha256: str, git_blob: str, size: int) -> Download:
    return Download(path.rsplit("/", 1)[1], (f"{base}/{path}",), sha256, git_blob, size)


#: Every dataset :func:`embudget.data.fetch.fetch_dataset` knows: canonical public sources
#: pinned to a commit, and the checksums of the exact files (sha256 computed from
#: byte-identical copies whose git blob ids match the source repositories'; the ML-1M
#: archive's sha256 is the one recorded for the archive with GroupLens' published md5
#: c4d9eecfca2ab87c1945afe126590906).
REMOTE_DATASETS: dict[str, RemoteDataset] = {
    d.name: d
    for d in (
        RemoteDataset(
            name="ml-1m",
            fmt="movielens",
            downloads=(
                Download(
                    "ml-1m.zip",
                    ("https://files.grouplens.org/datasets/movielens/ml-1m.zip",),
                    sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                    size=5_917_549,
                    members=(
                        ("ml-1m/ratings.dat", "ratings.dat"),
                        ("ml-1m/movies.dat", "movies.dat"),
                        ("ml-1m/users.dat", "users.dat"),
                        ("ml-1m/README", "README"),
                    ),
                ),
            ),
            origin="MovieLens 1M (GroupLens, grouplens.org/datasets/movielens/1m): 1,000,209 "
            "ratings of 3,706 movies by 6,040 users; every rating is a positive unless "
            "min_rating is set",
            licence="MovieLens terms: research use, cite Harper & Konstan (TiiS 2015), no "
            "redistribution without GroupLens' permission",
        ),
        RemoteDataset(
            name="yelp2018",
            fmt="lightgcn",
            downloads=(
                _lightgcn_file(
                    _LIGHTGCN,
                    "yelp2018/train.txt",
                    "1e9568725a9e833d0ac3bae01c94cd95367f73b3bb6104fd26b5f65ea5054093",
                    "cda12361055ba448ae4bd1070f6000c16dea8f22",
                    6_904_880,
                ),
                _lightgcn_file(
                    _LIGHTGCN,
                    "yelp2018/test.txt",
                    "9cd9b37926cd1447a06625ffa7914527573fb097c10cb0bbdb1d1b8ded3742fe",
                    "30dfbc3437b27b74cb2970b435a5ec93ad9f2468",
                    1_986_152,
                ),
            ),
            origin="Yelp Dataset Challenge 2018, 10-core, split by the NGCF authors (Wang et "
            "al., SIGIR 2019); kuandeng/LightGCN Data/yelp2018",
            licence="Yelp Dataset terms: non-commercial academic use; the LightGCN repository "
            "states no licence for its data",
        ),
        RemoteDataset(
            name="amazon-book",
            fmt="lightgcn",
            downloads=(
                # no sha256 of this file is published; its git blob id is LightGCN's own
                Download(
                    "train.txt",
                    (f"{_LIGHTGCN}/amazon-book/train.txt",),
                    git_blob="6ef55159c5f1fd7f6d86eb9ff290d0cc2854ac99",
                ),
                _lightgcn_file(
                    _LIGHTGCN,
                    "amazon-book/test.txt",
                    "6250754994dd953b91b48dccdd77a73f318e0634b4757c2abfcc9d33a54ab0f5",
                    "09e5da4e0bf46c751c4ba0f4375e414fd13512cd",
                    3_848_611,
                ),
            ),
            origin="Amazon review data, books (He & McAuley, WWW 2016), 10-core, split by "
            "the NGCF authors; kuandeng/LightGCN Data/amazon-book",
            licence="Amazon review data: research use, cite He & McAuley (2016); the LightGCN "
            "repository states no licence for its data",
        ),
        RemoteDataset(
            name="lastfm",
            fmt="lastfm",
            downloads=(
                _lightgcn_file(
                    _LIGHTGCN_PYTORCH,
                    "lastfm/data1.txt",
                    "c82af3228cbbda2f55a39244de09ed93292894f1d0d9f1908ebb57e27598fded",
                    "35bf4551dfd63df6d68be9b09214fafd0927212d",
                    579_727,
                ),
                _lightgcn_file(
                    _LIGHTGCN_PYTORCH,
                    "lastfm/test1.txt",
                    "de4417c0e6123284ce59a0934bcf5288ec1ec8774a18a1eef453c9952dfa48f9",
                    "c4227df62457fa5b3bf2926d13cae0218f2bebea",
                    144_867,
                ),
            ),
            origin="HetRec 2011 Last.fm (GroupLens), as preprocessed by "
            "gusye1234/LightGCN-PyTorch data/lastfm",
            licence="HetRec 2011 terms: research use with a citation; the LightGCN-PyTorch "
            "repository has no licence file",
        ),
    )
}
