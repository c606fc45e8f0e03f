"""nnU-Net integration: raw-format export, federated fingerprint and plans, nnU-Net's network trained federated.

Everything runs on CPU on small synthetic BraTS-layout federations the tests write; nnU-Net's own code runs
in child processes where it reads its folders from the environment.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

pytest.importorskip("nnunetv2", reason="nnU-Net is the optional extra medfed[nnunet]")

from medfed.challenge.predict import write_predictions
from medfed.cli import main
from medfed.errors import ConfigError, DataProblems, MedfedError
from medfed.fl.experiment import run_experiment
from medfed.integrations.nnunet import commands
from medfed.integrations.nnunet.export import (
    brats_to_nnunet,
    export_federation,
    nnunet_to_brats,
    raw_cases,
)
from medfed.integrations.nnunet.fingerprint import (
    ChannelMoments,
    SiteFingerprint,
    federated_fingerprint,
    histogram_edges,
    site_fingerprint,
    to_nnunet_axes,
)
from medfed.integrations.nnunet.network import (
    DeepSupervisionLoss,
    NnUNetPlan,
    build_nnunet_network,
    deep_supervision_weights,
)
from medfed.integrations.nnunet.planning import nnunet_env, plan_federation
from medfed.sites import load_federation
from medfed.synth import write_federation
from medfed.tasks import build_task
from medfed.tasks.segmentation import SegmentationConfig, _ResampleTo

DATASET = "Dataset501_BraTSsmall"
TEMPLATE = Path(__file__).resolve().parents[1] / "tasks" / "nnunet_brain_mri.yaml"


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The small synthetic FeTS-style federation (3 institutions, 32^3 voxels at ~6 mm, jittered spacings)."""
    return write_federation("brain_mri", tmp_path_factory.mktemp("brain"), scale="small", seed=0)


@pytest.fixture(scope="module")
def exported(small, tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("nnUNet_raw")
    export_federation(list(load_federation(small)), raw, 501, "BraTSsmall", progress=False)
    return raw


@pytest.fixture(scope="module")
def nnunet_pooled(exported, tmp_path_factory) -> Path:
    """nnU-Net's own pipeline on the pooled export (Python API, in a child with nnUNet_raw etc. set):
    integrity check, fingerprint (1e6 foreground samples in all), plans, preprocessing of 3d_fullres."""
    preprocessed = tmp_path_factory.mktemp("nnUNet_preprocessed")
    code = (
        "from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity\n"
        "from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import "
        "DatasetFingerprintExtractor\n"
        "from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess\n"
        f"verify_dataset_integrity('{exported / DATASET}', num_processes=1)\n"
        "extractor = DatasetFingerprintExtractor(501, num_processes=1)\n"
        "extractor.num_foreground_voxels_for_intensitystats = 1e6\n"
        "extractor.run(overwrite_existing=True)\n"
        "plan_experiments([501])\n"
        "preprocess([501], configurations=('3d_fullres',), num_processes=(1,))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=nnunet_env(exported, preprocessed), capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return preprocessed / DATASET


@pytest.fixture(scope="module")
def small_plans(small, tmp_path_factory) -> dict:
    """nnU-Net's plans from the small federation's merged fingerprint (100 intensity bins), planned once for the
    tests below that only read them (each planning is a child process importing nnU-Net)."""
    fingerprint = federated_fingerprint(list(load_federation(small)), bins=100)
    return plan_federation(fingerprint, len(fingerprint["spacings"]), tmp_path_factory.mktemp("plans"), 501,
                           "BraTSsmall")


# ----------------------------------------------------------------------------- labels (hand-computable)
def test_brats_labels_map_to_nested_nnunet_regions_and_back():
    brats = np.array([0, 1, 2, 4, 4, 2])
    assert brats_to_nnunet(brats).tolist() == [0, 2, 1, 3, 3, 1]  # 1 edema, 2 necrosis, 3 enhancing
    assert nnunet_to_brats(brats_to_nnunet(brats)).tolist() == brats.tolist()
    nn = brats_to_nnunet(brats)
    assert ((nn >= 1) == (brats > 0)).all()  # whole tumour = labels {1, 2, 3}
    assert ((nn >= 2) == np.isin(brats, [1, 4])).all()  # tumour core = {2, 3} = BraTS 1 | 4
    assert ((nn == 3) == (brats == 4)).all()  # enhancing = {3}
    with pytest.raises(ValueError, match=r"labels \[3\] are not BraTS"):
        brats_to_nnunet(np.array([0, 3]))


# ----------------------------------------------------------------------------- export
def test_export_round_trips_voxels_labels_and_hashed_ids(small, exported):
    folder = exported / DATASET
    description = json.loads((folder / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert description["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                                     "enhancing tumor": [3]}
    assert description["regions_class_order"] == [1, 2, 3] and description["file_ending"] == ".nii.gz"
    federation = load_federation(small)
    training = [item for site in federation for item in raw_cases(site, ["train", "val"])]
    assert description["numTraining"] == len(training) == len(list((folder / "labelsTr").iterdir()))
    for item in training:
        case = item["case_id"]
        for c in range(4):
            written = nib.load(folder / "imagesTr" / f"{case}_{c:04d}.nii.gz")
            assert np.array_equal(np.asarray(written.dataobj), item["image"][c])  # the same voxels
            assert np.allclose(written.affine, item["affine"])
        label = np.asarray(nib.load(folder / "labelsTr" / f"{case}.nii.gz").dataobj)
        assert np.array_equal(nnunet_to_brats(label), item["label"][0])
    test_cases = {item["case_id"] for site in federation for item in raw_cases(site, "test")}
    assert {p.name.split("_")[0] for p in (folder / "imagesTs").iterdir()} == test_cases
    splits = json.loads((folder / "splits_final.json").read_text())
    assert sorted(splits[0]["train"] + splits[0]["val"]) == sorted(i["case_id"] for i in training)
    # no subject id or source file name anywhere: names and dataset.json carry hashed ids only
    subjects = {str(s) for site in federation for s in site._table["_source_id"]}
    texts = [p.name for p in folder.rglob("*")] + [(folder / "dataset.json").read_text(),
                                                   (folder / "splits_final.json").read_text()]
    assert not any(subject in text for subject in subjects for text in texts)


def test_per_site_export_writes_one_dataset_per_site(small, tmp_path):
    sites = list(load_federation(small))
    written = export_federation(sites, tmp_path, 510, "Site", per_site=True, progress=False)
    assert [d.folder.name for d in written] == [f"Dataset{510 + i}_Site_{s.name}" for i, s in enumerate(sites)]
    for dataset, site in zip(written, sites, strict=True):
        assert dataset.training == len(site.split(["train", "val"]))
        assert json.loads((dataset.folder / "dataset.json").read_text())["numTraining"] == dataset.training


def test_an_export_onto_existing_dataset_ids_writes_nothing(small, tmp_path):
    (tmp_path / "Dataset511_Other").mkdir(parents=True)
    with pytest.raises(ConfigError, match="Dataset511_Other already hold"):
        export_federation(list(load_federation(small)), tmp_path, 510, "Site", per_site=True, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset511_Other"]  # site 1 was not written either


def test_bad_export_requests_list_every_problem(small, tmp_path):
    chest = write_federation("chest_xray", tmp_path / "chest", scale="small", seed=0)
    sites = [*load_federation(small), *load_federation(chest)]
    with pytest.raises(ConfigError) as err:
        export_federation(sites, tmp_path / "raw", 999, "bad name", per_site=True, progress=False)
    message = str(err.value)
    assert "outside nnU-Net's 1-999" in message and "'bad name'" in message and "site adult-a" in message
    assert not (tmp_path / "raw").exists()
    assert main(["nnunet", "export", str(chest), "--dataset-id", "7", "--name", "X", "--out",
                 str(tmp_path / "raw"), "--no-progress"]) == 2


def test_nnunets_own_pipeline_accepts_the_export(nnunet_pooled):
    plans = json.loads((nnunet_pooled / "nnUNetPlans.json").read_text())
    assert "3d_fullres" in plans["configurations"]
    assert (nnunet_pooled / "nnUNetPlans_3d_fullres").is_dir()  # preprocessing wrote the training arrays
    assert len(list((nnunet_pooled / "nnUNetPlans_3d_fullres").glob("*.pkl"))) == \
        json.loads((nnunet_pooled / "dataset.json").read_text())["numTraining"]


# ----------------------------------------------------------------------------- federated fingerprint
def exact_mixture(federation) -> dict:
    """The fingerprint's intensity statistics computed on all voxels at once (the test's own reference):
    nnU-Net's crop, foreground = label > 0, every case weighing 1 (the mixture nnU-Net samples from)."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    per_channel: dict[int, list[np.ndarray]] = {c: [] for c in range(4)}
    for site in federation:
        for item in raw_cases(site, ["train", "val"]):
            data, seg, _ = crop_to_nonzero(to_nnunet_axes(item["image"]), to_nnunet_axes(item["label"]).astype(np.int16))
            for c in range(4):
                per_channel[c].append(data[c][seg[0] > 0].astype(np.float64))
    out = {}
    for c, cases in per_channel.items():
        values = np.concatenate(cases)
        weights = np.concatenate([np.full(len(v), 1 / (len(v) * len(cases))) for v in cases])
        order = np.argsort(values, kind="stable")
        cumulative = np.cumsum(weights[order])
        mean = float(np.sum(weights * values))
        out[c] = {"mean": mean, "std": float(np.sqrt(np.sum(weights * (values - mean) ** 2))),
                  "min": float(values.min()), "max": float(values.max()),
                  **{key: float(values[order][np.searchsorted(cumulative, p / 100)])
                     for key, p in (("percentile_00_5", 0.5), ("median", 50), ("percentile_99_5", 99.5))}}
    return out


def test_merged_fingerprint_equals_the_pooled_one(small, nnunet_pooled):
    federation = load_federation(small)
    merged = federated_fingerprint(list(federation), bins=10_000)
    # against nnU-Net's own extractor on the pooled export: the per-case parts exactly
    pooled = json.loads((nnunet_pooled / "dataset_fingerprint.json").read_text())
    assert sorted(map(tuple, merged["spacings"])) == sorted(map(tuple, pooled["spacings"]))
    assert sorted(map(tuple, merged["shapes_after_crop"])) == sorted(map(tuple, pooled["shapes_after_crop"]))
    assert merged["median_relative_size_after_cropping"] == pooled["median_relative_size_after_cropping"]
    # against every voxel at once: moments and extremes exactly, percentiles within one histogram bin
    exact = exact_mixture(federation)
    edges = histogram_edges([site_fingerprint(s) for s in federation], bins=10_000)
    for c in range(4):
        got, want = merged["foreground_intensity_properties_per_channel"][str(c)], exact[c]
        assert got["mean"] == pytest.approx(want["mean"], rel=1e-12)
        assert got["std"] == pytest.approx(want["std"], rel=1e-9)
        assert (got["min"], got["max"]) == (want["min"], want["max"])
        width = edges[c][1] - edges[c][0]
        for key in ("percentile_00_5", "median", "percentile_99_5"):
            assert abs(got[key] - want[key]) <= width, (c, key, got[key], want[key], width)
        # nnU-Net's sampled statistics (1e6 samples) agree within 1% of the channel's spread
        sampled = pooled["foreground_intensity_properties_per_channel"][str(c)]
        for key in ("mean", "std", "median", "percentile_00_5", "percentile_99_5"):
            assert abs(got[key] - sampled[key]) <= 0.01 * want["std"], (c, key, got[key], sampled[key])


def test_a_site_fingerprint_holds_site_level_intensity_statistics_only(small):
    site = load_federation(small)[0]
    message = site_fingerprint(site).to_json()
    text = json.dumps(message, allow_nan=False)  # strict JSON
    assert not any(str(case) in text for case in site.cases["case_id"])
    assert not any(str(s) in text for s in site._table["_source_id"])
    # per case only geometry (nnU-Net's medians need it); no case's tumour size or intensities
    assert {key for case in message["cases"] for key in case} == {
        "spacing", "shape_after_crop", "relative_size_after_cropping"}
    assert len(message["channels"]) == 4
    assert set(message["channels"][0]) == {"cases", "mean", "m2", "min", "max"}
    assert SiteFingerprint.from_json(json.loads(text)) == site_fingerprint(site)


def test_a_federation_without_foreground_is_a_clear_error():
    empty = SiteFingerprint("a", [ChannelMoments() for _ in range(4)], [])
    with pytest.raises(MedfedError, match="no training case of any site has foreground"):
        histogram_edges([empty])
    with pytest.raises(ConfigError, match="bins must be at least 1"):
        histogram_edges([empty], bins=0)


def test_channel_moments_merge_to_the_mixture_moments():
    rng = np.random.default_rng(0)
    cases = [rng.normal(m, s, n) for m, s, n in ((0, 1, 50), (5, 2, 7), (-3, 0.5, 300), (1, 1, 1))]
    sites = [ChannelMoments(), ChannelMoments()]
    for i, values in enumerate(cases):
        sites[i % 2].add_case(values)
    k = sum(m.cases for m in sites)
    mean = sum(m.cases * m.mean for m in sites) / k
    var = sum(m.m2 + m.cases * (m.mean - mean) ** 2 for m in sites) / k
    means, variances = np.array([v.mean() for v in cases]), np.array([v.var() for v in cases])
    assert mean == pytest.approx(means.mean(), rel=1e-13)  # each case weighs 1, whatever its size
    assert var == pytest.approx(np.mean(variances + (means - means.mean()) ** 2), rel=1e-13)
    assert (min(m.min for m in sites), max(m.max for m in sites)) == (min(map(np.min, cases)), max(map(np.max, cases)))


def test_federated_plans_match_plans_from_the_pooled_fingerprint(small, nnunet_pooled, tmp_path):
    """The merged fingerprint drives nnU-Net's planner to the same network, patch, spacing and normalisation
    as the pooled fingerprint does."""
    plans_file = commands.plan(small, tmp_path / "plans", 501, "BraTSsmall", progress=False)
    federated = json.loads(plans_file.read_text())["configurations"]["3d_fullres"]
    pooled = json.loads((nnunet_pooled / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]
    for key in ("patch_size", "spacing", "batch_size", "normalization_schemes", "use_mask_for_norm", "architecture",
                "median_image_size_in_voxels"):
        assert federated[key] == pooled[key], key
    assert (plans_file.parent / "dataset_fingerprint.json").is_file()


# ----------------------------------------------------------------------------- network and loss
def test_deep_supervision_weights_follow_nnunet():
    # 5 stages -> 4 decoder outputs weighted 1, 1/2, 1/4, 0 (the lowest resolution unused), normalised by 1.75
    assert np.allclose(deep_supervision_weights(5), [1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0])


@pytest.mark.parametrize("forward", [[0, 1, 2], [1, 0, 2], [2, 0, 1], [2, 1, 0]])
def test_medfed_axes_map_to_nnunets_network_axes(small_plans, tmp_path, forward):
    """A medfed (X, Y, Z) volume permuted for the network equals nnU-Net's own view of the same NIfTI case
    (Z, Y, X, then transpose_forward); patch and spacing map the same way."""
    plans = copy.deepcopy(small_plans)
    plans["transpose_forward"] = forward
    plans["transpose_backward"] = [int(i) for i in np.argsort(forward)]
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    plan = NnUNetPlan.load(tmp_path / "plans.json")
    model = build_nnunet_network(plan, 4, 3, seed=0)
    volume = np.random.default_rng(0).random((4, 5, 6, 7)).astype(np.float32)  # (C, X, Y, Z)
    nnunet_view = to_nnunet_axes(volume).transpose(0, *[t + 1 for t in forward])
    assert torch.equal(torch.from_numpy(volume)[None].permute(*model.forward_order), torch.from_numpy(nnunet_view)[None])
    config = plans["configurations"]["3d_fullres"]
    assert list(np.zeros(plan.patch_size)[None, None].transpose(*model.forward_order).shape[2:]) == config["patch_size"]
    assert [plan.spacing[a] for a in plan.network_axes] == pytest.approx(config["spacing"])


def test_resampling_to_the_plans_spacing(tmp_path):
    item = {"image": torch.rand(4, 10, 12, 8), "label": (torch.rand(3, 10, 12, 8) > 0.5).float(),
            "spacing": np.array([2.0, 1.0, 3.0])}
    train = _ResampleTo([1.0, 2.0, 3.0], with_label=True)(dict(item))
    assert train["image"].shape == (4, 20, 6, 8) and train["label"].shape == (3, 20, 6, 8)
    assert set(torch.unique(train["label"]).tolist()) <= {0.0, 1.0} and list(train["spacing"]) == [1.0, 2.0, 3.0]
    evaluation = _ResampleTo([1.0, 2.0, 3.0], with_label=False)(dict(item))
    assert evaluation["image"].shape == (4, 20, 6, 8)
    assert evaluation["label"].shape == (3, 10, 12, 8) and list(evaluation["spacing"]) == [2.0, 1.0, 3.0]


def test_a_patch_the_network_cannot_take_is_refused(small_plans, tmp_path):
    (tmp_path / "plans.json").write_text(json.dumps(small_plans))
    plan = NnUNetPlan.load(tmp_path / "plans.json")
    assert plan.patch_problems(plan.patch_size) == []
    odd = [p + 1 for p in plan.patch_size]
    with pytest.raises(ConfigError, match="must be 3 sides, each a multiple of"):
        build_task(SegmentationConfig(model={"name": "nnunet", "plans": str(tmp_path / "plans.json")}, patch_size=odd))


def test_replanning_into_the_same_folder_returns_the_new_planners_plans(small, tmp_path):
    first = json.loads(commands.plan(small, tmp_path, 501, "BraTSsmall", progress=False).read_text())
    second = json.loads(commands.plan(small, tmp_path, 501, "BraTSsmall", planner="nnUNetPlannerResEncM",
                                      progress=False).read_text())
    assert first["plans_name"] == "nnUNetPlans" and second["plans_name"] == "nnUNetResEncUNetMPlans"
    assert "ResidualEncoderUNet" in second["configurations"]["3d_fullres"]["architecture"]["network_class_name"]


def test_the_network_takes_medfed_axes_and_its_loss_is_finite(small, tmp_path):
    fingerprint = federated_fingerprint(list(load_federation(small)), bins=1000)
    plans = plan_federation(fingerprint, len(fingerprint["spacings"]), tmp_path, 501, "BraTSsmall")
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    plan = NnUNetPlan.load(tmp_path / "plans.json")
    assert plans["transpose_forward"] != [0, 1, 2]  # a real permutation is exercised
    model = build_nnunet_network(plan, 4, 3, seed=0)
    again = build_nnunet_network(plan, 4, 3, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    image = torch.randn(2, 4, *plan.patch_size)
    model.train()
    outputs = model(image)
    assert isinstance(outputs, list) and outputs[0].shape == (2, 3, *plan.patch_size)
    target = (torch.rand(2, 3, *plan.patch_size) > 0.7).float()
    loss = DeepSupervisionLoss(plan)(outputs, target)
    loss.backward()
    assert torch.isfinite(loss) and loss.requires_grad
    model.eval()
    assert model(image).shape == (2, 3, *plan.patch_size)  # full resolution only


@pytest.mark.slow(seconds=30)
def test_the_planned_network_trains_federated_and_its_loss_falls(small, tmp_path):
    plans = commands.plan(small, tmp_path / "plans", 502, "BraTSsmall", progress=False)
    template = yaml.safe_load(TEMPLATE.read_text())  # tasks/nnunet_brain_mri.yaml, a shorter budget
    template["task"]["model"]["plans"] = str(plans)
    template["training"].update({"rounds": 2, "local_steps": 2, "eval_every": 0})
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({**template, "federation": str(small), "methods": ["fedavg"]}))
    result = run_experiment(config, tmp_path / "out", progress=False)
    assert result.stopped == {} and result.failures == []
    log = [json.loads(x) for x in (result.out / "runs" / "fedavg" / "rounds.jsonl").read_text().splitlines()]
    first, last = (np.mean(list(r["train_loss"].values())) for r in (log[0], log[-1]))
    assert last < first, (first, last)
    assert "dice_mean" in (result.out / "metrics.csv").read_text()  # evaluated and reported as usual
    # medfed predict: the logits come back from the plans' spacing to each case's own grid
    written = write_predictions(config, "fedavg", tmp_path / "submission", reports=tmp_path / "out", progress=False)
    federation = load_federation(small)
    assert written == sum(len(site.split("test")) for site in federation)
    for site in federation:
        for case in site.reference_cases("test"):
            predicted = nib.load(tmp_path / "submission" / f"{case.source_id}_seg.nii.gz")
            assert predicted.shape == case.label.shape and np.allclose(predicted.affine, case.affine)


# ----------------------------------------------------------------------------- predictions back to the sites
def test_nnunet_predictions_become_brats_submissions(small, tmp_path):
    federation = load_federation(small)
    predictions = tmp_path / "predictions"
    predictions.mkdir()
    truth = {}
    for site in federation:
        for case in site.reference_cases("test"):
            nib.save(nib.Nifti1Image(brats_to_nnunet(case.label), case.affine), predictions / f"{case.case_id}.nii.gz")
            truth[case.source_id] = case.label
    done = commands.import_predictions(small, predictions, tmp_path / "submission")
    assert done["written"] == len(truth)
    for source_id, label in truth.items():
        written = np.asarray(nib.load(tmp_path / "submission" / f"{source_id}_seg.nii.gz").dataobj)
        assert np.array_equal(written, label)  # ET = 4 again, the case's own file name
    # medfed score reads them as any submission: perfect predictions, Dice 1 on every region of every case
    assert main(["score", str(small), f"nnunet={tmp_path / 'submission'}", "--out", str(tmp_path / "score"),
                 "--resamples", "10", "--no-progress"]) == 0
    cases = pd.read_csv(tmp_path / "score" / "per_case.csv")
    dice = cases[cases["metric"].str.startswith("Dice_")]
    assert set(dice["case_id"]) == {c.case_id for site in federation for c in site.reference_cases("test")}
    assert (dice["status"] == "ok").all() and np.allclose(dice["value"], 1.0)
    missing = next(iter(predictions.iterdir()))
    missing.unlink()
    with pytest.raises(DataProblems) as err:
        commands.import_predictions(small, predictions, tmp_path / "again")
    assert len(err.value.problems) == 1 and err.value.problems[0].reason == "no prediction"
    sites = load_federation(small).site_names
    lost = err.value.problems[0].site
    other = next(s for s in sites if s != lost)
    assert commands.import_predictions(small, predictions, tmp_path / "one", only=[other])["written"] == sum(
        1 for _ in load_federation(small)[other].reference_cases("test"))  # one site's predictions alone
    with pytest.raises(ConfigError, match="no site"):
        commands.import_predictions(small, predictions, tmp_path / "x", only=["nowhere"])
    # a truncated file and a probability map: each named, with the others still written
    (kept,) = predictions.iterdir()
    kept.write_bytes(kept.read_bytes()[:60])
    nib.save(nib.Nifti1Image(np.full((32, 32, 32), 0.7, dtype=np.float32), np.eye(4)), missing)
    with pytest.raises(DataProblems) as err:
        commands.import_predictions(small, predictions, tmp_path / "third")
    reasons = [p.reason for p in err.value.problems]
    assert len(reasons) == 2
    assert any("non-integer" in r for r in reasons) and any("unreadable NIfTI" in r for r in reasons)
