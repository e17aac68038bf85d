"""What a manifest's artifacts scored, as the columns a table, the model card and the
report show: the task's own scores (accuracy, MAE, cosine similarity) where
classification shows accuracy, then the project's metric hook's numbers."""

from __future__ import annotations


def _score(name: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.2f}%" if name.endswith("accuracy") else f"{value:.4g}"


def _change(name: str, value: float | None, reference: float | None) -> str:
    if value is None or reference is None:
        return "-"
    if name.endswith("accuracy"):
        return f"{(value - reference) * 100 + 0.0:+.2f} pt"
    return f"{value - reference + 0.0:+.4g}"


def score_columns(m: dict) -> list[tuple[str, object, str]]:
    """The columns that show what the artifacts scored, for the build's task: (header,
    cell of an artifact row, the budget that colours it red). Classification shows
    accuracy (and top-k), its change against the reference and the top-1 agreement;
    regression its MAE and RMSE; embeddings their cosine similarity to the reference's;
    then every number the project's metric hook returned, the gated one with its change."""
    task = (m.get("evaluation") or {}).get("task") or "classification"
    gated = (m.get("budgets") or {}).get("gated_metric")
    names = list(dict.fromkeys(k for a in m["artifacts"] for k in (a.get("metrics") or {})))
    cols: list[tuple[str, object, str]] = []

    def metric(name):
        return lambda a: (a.get("metrics") or {}).get(name)

    def change(name):
        return lambda a: _change(name, (a.get("metrics") or {}).get(name), (a.get("reference_metrics") or {}).get(name))

    if task == "classification":
        cols.append(("accuracy", lambda a: _score("accuracy", a.get("accuracy")), ""))
        cols.extend((n.removesuffix("_accuracy"), lambda a, n=n: _score(n, metric(n)(a)), "max_metric_drop" if n == gated else "")
                    for n in names if n.startswith("top") and n.endswith("_accuracy"))
        cols.append(("vs ref", lambda a: "-" if a.get("accuracy_drop_pt") is None else f"{(-a['accuracy_drop_pt']) + 0.0:+.2f} pt",
                     "max_accuracy_drop_pt"))
        cols.append(("agree", lambda a: "-" if a.get("agreement") is None else f"{a['agreement'] * 100:.1f}%", "min_agreement_pct"))
        shown = {"accuracy"} | {n for n in names if n.startswith("top") and n.endswith("_accuracy")}
    elif task == "regression":
        cols.append(("MAE", lambda a: _score("mae", metric("mae")(a)), "max_metric_drop" if gated == "mae" else ""))
        cols.append(("vs ref", change("mae"), "max_metric_drop" if gated == "mae" else ""))
        cols.append(("RMSE", lambda a: _score("rmse", metric("rmse")(a)), "max_metric_drop" if gated == "rmse" else ""))
        shown = {"mae", "rmse"}
    elif task == "embedding":
        cols.append(("cos mean", lambda a: _fixed(metric("cosine_mean")(a)), "max_metric_drop" if gated == "cosine_mean" else ""))
        cols.append(("cos min", lambda a: _fixed(metric("cosine_min")(a)), "min_cosine"))
        shown = {"cosine_mean", "cosine_min"}
    else:
        shown = set()
    for n in names:
        if n in shown:
            continue
        cols.append((n, lambda a, n=n: _score(n, metric(n)(a)), "max_metric_drop" if n == gated else ""))
        if n == gated:
            cols.append(("vs ref", change(n), "max_metric_drop"))
    return cols


def _fixed(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def reference_line(m: dict) -> str:
    """What the reference model scored, as the table's scores are read against it."""
    ev = m.get("evaluation") or {}   # the card renders partial manifests too
    samples = ev.get("samples", "?")
    if ev.get("reference_accuracy") is not None:
        return f"{ev['reference_accuracy'] * 100:.2f}% on {samples} samples"
    scores = {k: v for k, v in (ev.get("reference_metrics") or {}).items() if not k.startswith("cosine_")}
    task = ev.get("task") or "classification"
    if not scores:
        return f"{samples} samples, {'unlabelled: parity only' if task == 'none' else task}"
    return ", ".join(f"{k} {_score(k, v)}" for k, v in scores.items()) + f" on {samples} samples"
