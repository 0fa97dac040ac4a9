"""The IJB benchmarks and the file names of their meta folders (the released layout): the one list of
targets, read without numpy by the workflow's planning as well as by the reader (`faceflow.eval.ijb_layout`).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TargetFiles:
    """File names of one benchmark's meta folder."""

    prefix: str
    galleries: tuple[str, ...]

    @property
    def faces(self) -> str:
        return f"{self.prefix}_face_tid_mid.txt"

    @property
    def landmarks(self) -> str:
        return f"{self.prefix}_name_5pts_score.txt"

    @property
    def pairs(self) -> str:
        return f"{self.prefix}_template_pair_label.txt"

    @property
    def probe(self) -> str:
        return f"{self.prefix}_1N_probe_mixed.csv"

    def gallery_file(self, gallery: str) -> str:
        return f"{self.prefix}_1N_gallery_{gallery}.csv"


# the one list of benchmarks: IJB-C's galleries are G1/G2, IJB-B's S1/S2 (as released)
TARGETS: dict[str, TargetFiles] = {
    "IJBC": TargetFiles("ijbc", ("G1", "G2")),
    "IJBB": TargetFiles("ijbb", ("S1", "S2")),
}
