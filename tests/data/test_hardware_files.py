"""Every hardware_db data file loads, has a source and matches its file schema."""

from __future__ import annotations

from pathlib import Path

import pytest

import hardware_db
from hardware_db import HardwareDataError, UnknownHardwareError
from hardware_db._files import check_cluster_references, data_root, read_record_file

REQUIRED_GPUS = {
    "a100-sxm-40gb",
    "a100-sxm-80gb",
    "h100-sxm",
    "h100-pcie",
    "h200-sxm",
    "b200",
    "mi250x",
    "mi300x",
    "l40s",
    "rtx-4090",
}
REQUIRED_INTERCONNECTS = {
    "nvlink3",
    "nvlink4",
    "nvlink5",
    "pcie4-x16",
    "pcie5-x16",
    "ib-hdr",
    "ib-ndr",
    "ib-xdr",
    "roce-100g",
    "roce-200g",
    "roce-400g",
    "ethernet-100g",
    "xgmi-mi300x",
}
REQUIRED_CLUSTERS = {"dgx-a100", "dgx-h100", "hgx-h200", "dgx-b200", "mi300x-8"}


def stems(kind: str) -> list[str]:
    """File stems under ``kind``, listed without parsing so one bad file fails one test."""
    folder = data_root() / kind
    return sorted(
        e.name.removesuffix(".toml") for e in folder.iterdir() if e.name.endswith(".toml")
    )


GPU_IDS = stems("gpus")
INTERCONNECT_IDS = stems("interconnects")
CLUSTER_IDS = stems("clusters")

VALID_GPU = """\
id = "{stem}"
name = "Test GPU"
vendor = "nvidia"
architecture = "hopper"
memory_gib = 80
hbm_bandwidth_gbps = 3350
tdp_w = 700

[peak_tflops]
fp32 = 67.0
tf32 = 494.7
bf16 = 989.4
fp16 = 989.4
fp8 = 1978.9

[source]
url = "https://example.com/datasheet.pdf"
note = "test record"
"""


def write_gpu(tmp_path: Path, text: str, stem: str = "test-gpu") -> Path:
    path = tmp_path / f"{stem}.toml"
    path.write_text(text.format(stem=stem), encoding="utf-8")
    return path


# --- the shipped files ------------------------------------------------------------------


def test_catalogue_has_the_required_records() -> None:
    assert set(GPU_IDS) >= REQUIRED_GPUS
    assert set(INTERCONNECT_IDS) >= REQUIRED_INTERCONNECTS
    assert set(CLUSTER_IDS) >= REQUIRED_CLUSTERS


def test_lists_name_every_file_sorted() -> None:
    assert hardware_db.list_gpus() == GPU_IDS
    assert hardware_db.list_interconnects() == INTERCONNECT_IDS
    assert hardware_db.list_clusters() == CLUSTER_IDS


@pytest.mark.parametrize("kind", ["gpus", "interconnects", "clusters"])
def test_every_file_passes_its_schema(kind: str) -> None:
    folder = data_root() / kind
    assert stems(kind), f"no data files under {kind}/"
    for entry in folder.iterdir():
        if entry.name.endswith(".toml"):
            record = read_record_file(entry, kind)  # type: ignore[arg-type]
            assert record["id"] == entry.name.removesuffix(".toml")


@pytest.mark.parametrize("gpu_id", GPU_IDS)
def test_gpu_has_source_and_dense_peaks_in_order(gpu_id: str) -> None:
    gpu = hardware_db.read_gpu(gpu_id)
    assert gpu["id"] == gpu_id
    assert gpu["source"]["url"].startswith("https://")
    assert gpu["source"]["note"].strip()
    peaks = gpu["peak_tflops"]
    assert peaks["bf16"] > peaks["fp32"]
    if "tf32" in peaks:
        assert peaks["tf32"] <= peaks["bf16"]
    if "fp8" in peaks:
        assert peaks["bf16"] <= peaks["fp8"]


@pytest.mark.parametrize(
    ("gpu_id", "dtype", "tflops"),
    [
        ("a100-sxm-80gb", "bf16", 312.0),
        ("h100-sxm", "bf16", 989.4),
        ("h100-sxm", "fp8", 1978.9),
        ("h200-sxm", "bf16", 989.4),
        ("b200", "bf16", 2250.0),
        ("mi300x", "bf16", 1307.4),
        ("mi300x", "fp8", 2614.9),
        ("mi250x", "bf16", 383.0),
        ("rtx-4090", "bf16", 165.2),  # FP32 accumulate, not the FP16-accumulate 330.3
    ],
)
def test_dense_peaks_match_the_datasheets(gpu_id: str, dtype: str, tflops: float) -> None:
    assert hardware_db.read_gpu(gpu_id)["peak_tflops"][dtype] == tflops


@pytest.mark.parametrize("gpu_id", ["a100-sxm-40gb", "a100-sxm-80gb", "mi250x"])
def test_gpus_without_fp8_omit_the_key(gpu_id: str) -> None:
    assert "fp8" not in hardware_db.read_gpu(gpu_id)["peak_tflops"]


@pytest.mark.parametrize("link_id", INTERCONNECT_IDS)
def test_interconnect_has_source(link_id: str) -> None:
    link = hardware_db.read_interconnect(link_id)
    assert link["source"]["url"].startswith("https://")
    assert link["latency_us"] > 0
    assert link["scope"] == (
        "intra_node" if link["kind"] in {"nvlink", "xgmi", "pcie"} else "inter_node"
    )


@pytest.mark.parametrize(
    ("link_id", "per_direction_gbps"),
    [
        ("nvlink3", 300.0),
        ("nvlink4", 450.0),
        ("nvlink5", 900.0),
        ("ib-hdr", 25.0),
        ("ib-ndr", 50.0),
    ],
)
def test_interconnect_bandwidth_is_per_direction_in_bytes(
    link_id: str, per_direction_gbps: float
) -> None:
    assert hardware_db.read_interconnect(link_id)["bandwidth_gbps"] == per_direction_gbps


@pytest.mark.parametrize("cluster_id", CLUSTER_IDS)
def test_cluster_references_resolve(cluster_id: str) -> None:
    cluster = hardware_db.read_cluster(cluster_id)
    assert cluster["gpu"] in GPU_IDS
    assert hardware_db.read_interconnect(cluster["intra_node"])["scope"] == "intra_node"
    assert hardware_db.read_interconnect(cluster["inter_node"])["scope"] == "inter_node"
    assert cluster["source"]["url"].startswith("https://")


def test_records_are_copies() -> None:
    hardware_db.read_gpu("h100-sxm")["peak_tflops"]["bf16"] = 1.0
    assert hardware_db.read_gpu("h100-sxm")["peak_tflops"]["bf16"] == 989.4


@pytest.mark.parametrize(
    ("reader", "what"),
    [
        (hardware_db.read_gpu, "GPU"),
        (hardware_db.read_interconnect, "interconnect"),
        (hardware_db.read_cluster, "cluster"),
    ],
)
def test_unknown_id_lists_the_known_ids(reader: object, what: str) -> None:
    with pytest.raises(UnknownHardwareError) as caught:
        reader("h900")  # type: ignore[operator]
    message = str(caught.value)
    assert isinstance(caught.value, KeyError)
    assert message.startswith(f"unknown {what} 'h900'; known: ")
    if what == "GPU":
        assert ", ".join(GPU_IDS) in message


def test_profiles_dir_has_readme_and_no_profiles_for_unknown_gpu() -> None:
    assert (hardware_db.profiles_dir() / "README.md").is_file()
    assert hardware_db.list_profiles("a100-sxm-40gb") == []
    assert "2026-11-23-h100-torch2.11-train-steps" in hardware_db.list_profiles("h100-sxm")
    with pytest.raises(UnknownHardwareError):
        hardware_db.list_profiles("h900")


# --- malformed files --------------------------------------------------------------------


def test_valid_tmp_file_passes(tmp_path: Path) -> None:
    record = read_record_file(write_gpu(tmp_path, VALID_GPU), "gpus")
    assert record["peak_tflops"]["fp8"] == 1978.9


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('url = "https://example.com/datasheet.pdf"\n', "", "source.url"),
        ('url = "https://example.com/datasheet.pdf"', 'url = ""', "source.url"),
        ("bf16 = 989.4", "bf16 = -989.4", "peak_tflops.bf16"),
        ("bf16 = 989.4", 'bf16 = "989.4"', "peak_tflops.bf16"),
        ("fp32 = 67.0", "fp32 = true", "peak_tflops.fp32"),
        ("memory_gib = 80\n", "", "memory_gib"),
        ('vendor = "nvidia"', 'vendor = "intel"', "vendor"),
        ("fp8 = 1978.9", "fp8 = 1978.9\nint4 = 1.0", "peak_tflops.int4"),
        ("tdp_w = 700", "tdp_w = 700\ntypo_key = 1", "typo_key"),
    ],
)
def test_malformed_file_names_the_file_and_key(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    assert old in VALID_GPU
    path = write_gpu(tmp_path, VALID_GPU.replace(old, new))
    with pytest.raises(HardwareDataError, match=rf"gpus/test-gpu\.toml: .*'{key}'"):
        read_record_file(path, "gpus")


def test_id_must_equal_file_stem(tmp_path: Path) -> None:
    path = write_gpu(tmp_path, VALID_GPU.replace('id = "{stem}"', 'id = "other"'))
    with pytest.raises(HardwareDataError, match=r"key 'id' is 'other' .* stem 'test-gpu'"):
        read_record_file(path, "gpus")


def test_invalid_toml_is_a_data_error(tmp_path: Path) -> None:
    path = write_gpu(tmp_path, VALID_GPU + "\nbroken = [\n")
    with pytest.raises(HardwareDataError, match=r"gpus/test-gpu\.toml: invalid TOML"):
        read_record_file(path, "gpus")


def test_cluster_with_unknown_gpu_or_wrong_scope_fails() -> None:
    cluster = hardware_db.read_cluster("dgx-h100")
    gpus = {gpu_id: hardware_db.read_gpu(gpu_id) for gpu_id in GPU_IDS}
    links = {link_id: hardware_db.read_interconnect(link_id) for link_id in INTERCONNECT_IDS}
    check_cluster_references(cluster, gpus=gpus, interconnects=links)  # the real one is fine

    with pytest.raises(HardwareDataError, match=r"dgx-h100\.toml: key 'gpu' .*'h900'"):
        check_cluster_references({**cluster, "gpu": "h900"}, gpus=gpus, interconnects=links)
    with pytest.raises(HardwareDataError, match=r"key 'inter_node' names 'nvlink4', whose scope"):
        check_cluster_references(
            {**cluster, "inter_node": "nvlink4"}, gpus=gpus, interconnects=links
        )
