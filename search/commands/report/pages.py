"""The report's sections, and index.html and report.md written from the same sections."""

from __future__ import annotations

import html
from pathlib import Path
from dataclasses import dataclass, field

from ...study.layout import plural
from ...study.record import StudyRecord, TrialRecord
from .figures import ACC_MACS_PLOT, ACC_PLOT, CURVES_PLOT, IMPORTANCE_PLOT
from .numbers import REPORTED, Importances, Mark, dataset_phrase, dataset_short, failures, model_1_reported

TEXT_COLUMNS = ("", "spec", "model", "description", "parameter", "point", "measured as", "retrained", "data set")


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)  # plain text (escaped in HTML)
    image: str | None = None
    image_alt: str = ""
    table: tuple[list[str], list[list[str]]] | None = None
    notes: list[str] = field(default_factory=list)


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def fmt_int(x) -> str:
    return "—" if x is None else f"{x:,}"


def sections(study: StudyRecord, trials: list[TrialRecord], numbers: dict, marks: list[Mark],
             imp: Importances) -> list[Section]:
    counts, rows, trust = numbers["counts"], numbers["top"], numbers["pruner_trust"]
    short = dataset_short(study.dataset)
    held_out = (f"{study.val_size:,} images held out of its training split" if study.val_size
                else "a split held out of training")
    split = f"validation accuracy on {held_out}" + (f", training on {study.limit_train:,} images"
                                                    if study.limit_train else "")
    out = []

    overview = Section("Overview", [
        f"Study {study.name!r}: {counts['trials']} trials under a budget of {fmt_int(study.budget)} parameters"
        + (f" and {fmt_int(study.macs_budget)} MACs per image" if study.macs_budget else "") + ", "
        f"trained and compared on {dataset_phrase(study.dataset)}. The objective is {split}.",
        "Accuracies of trials are validation accuracies on that data; the seed report's Table 1 gives test "
        "accuracies on true CIFAR-10 after 200 epochs. The two are not the same measurement."])
    if study.data:
        d = study.data
        overview.paragraphs.append(
            f"The data: {len(d['classes'])} classes, {d['side']}x{d['side']} "
            f"{'grayscale' if d['channels'] == 1 else 'colour'} images, normalised by the mean "
            f"({', '.join(f'{m:.4f}' for m in d['mean'])}) and standard deviation "
            f"({', '.join(f'{v:.4f}' for v in d['std'])}) of the training split's pixels; fingerprint {d['fingerprint']}.")
    exported = study.exported
    if exported and exported.get("test_acc") is not None:
        # The folder's name only: a report travels, and a path of the machine that made it means nothing.
        where = f" (exported to a folder named {Path(exported['dir']).name})" if exported.get("dir") else ""
        on = dataset_phrase(exported.get("dataset") or study.dataset)
        overview.paragraphs.append(f"Exported winner: trial {exported.get('trial')}, test accuracy "
                                   f"{pct(exported['test_acc'])} on the test split of {on}{where}.")
    out.append(overview)

    failed = failures(trials)
    out.append(Section("Counts", table=(["", "count"], [
        ["trials run", str(counts["trials"])],
        ["complete", str(counts["complete"])],
        ["pruned by the pruner", str(counts["pruned_by_pruner"])],
        ["stopped as diverged", str(counts["diverged"])],
        ["skipped as duplicates of a running trial", str(counts["duplicate"])],
        ["rejected by the budget (over budget, not trained)", str(counts["over_budget"])],
        ["failed", str(counts["failed"])],
        ["running", str(counts["running"])],
        ["waiting (queued or to retry)", str(counts["waiting"])],
        ["GPU-hours used", f"{counts['gpu_hours']:.3f}"],
        ["CPU-hours used", f"{counts['cpu_hours']:.3f}"],
    ]), notes=([f"Failed: {', '.join(f'{n} {why}' for why, n in sorted(failed.items()))}."] if failed else []) + [
        "Hours are the sum of the recorded training seconds per epoch of every trial, by the device it ran on; "
        "epochs a resumed trial replays from an earlier run's checkpoint count once."]))

    if rows:
        header = ["rank", "trial", "spec", "params", "MACs", "val acc", "epochs", "train s", "test acc"]
        body = [[str(r["rank"]), str(r["trial"]), r["label"],
                 fmt_int(r["params"]), fmt_int(r["macs"]), pct(r["val_acc"]), str(r["epochs"]),
                 f"{r['seconds']:.1f}", pct(r["test_acc"])] for r in rows]
        out.append(Section(f"Top {len(rows)} trials", table=(header, body), notes=[
            f"val acc: best {split} ({short}). epochs: epochs trained. train s: training seconds in all. "
            f"test acc: only for the exported winner, on the test split of {short}."]))
    else:
        out.append(Section("Top trials", ["No trial has completed yet: nothing to rank."]))

    if numbers["final_stage"]:
        final = numbers["final_stage"]
        header = ["", "search trial", "spec", "params", "MACs", "search val acc", "search epochs", "final val acc",
                  "final epochs"]
        body = [["winner" if r["winner"] else "", str(r["trial"]),
                 r["label"], fmt_int(r["params"]),
                 fmt_int(r["macs"]), pct(r["search_val_acc"]), str(r["search_epochs"]),
                 pct(r["val_acc"]) if r["val_acc"] is not None else r["state"].lower(), str(r["epochs"])]
                for r in final]
        out.append(Section("Final stage", table=(header, body), notes=[
            "The search's best distinct specs and its baseline, trained again from scratch for longer and "
            f"unpruned, in a study of their own; the best of them by {split} is the winner."]))

    if numbers["retrained"]:
        out.append(_retrained(numbers["retrained"], model_1_reported(study)))

    trained = counts["trained"]
    acc_text = [
        f"Every trained trial ({trained}) by its parameter count and best validation accuracy; the Pareto front "
        "joins the complete trials no other complete trial beats on both. The dashed line is the budget. "
        f"Diamonds are the seed report's Table 1 models, {REPORTED}, at their exact parameter counts where "
        "the spec is known (else the reported count). The numbers beside the points are those of the table "
        "under the plot."]
    baseline = next((r for r in trials if r.baseline), None)
    if baseline is None:
        acc_text.append("This study was not seeded with a baseline.")
    elif baseline.trained:
        acc_text.append(f"The star is the seeded baseline, {baseline.baseline_label}, as trained in this study "
                        f"(trial {baseline.number}, "
                        f"{pct(baseline.best_acc)} validation accuracy after {plural(len(baseline.curve), 'epoch')}).")
    else:
        why = (f"over the budget ({fmt_int(baseline.params)} parameters)" if baseline.over_budget
               else baseline.state.lower())
        acc_text.append(f"{baseline.baseline_label} was seeded as trial {baseline.number} but not trained here: "
                        f"{why}.")
    if numbers["zoomed"]:
        acc_text.append("The right panel zooms on the corner of the Table 1 models (the dotted box on the left).")
    if not trained:
        acc_text.append("No trial has trained yet.")
    table = None if not marks else (["#", "point", "params", "MACs", "accuracy", "measured as"],
                                    [[str(m.number), m.name, fmt_int(m.params), fmt_int(m.macs), f"{m.acc:.2f}%",
                                      m.measured] for m in marks])
    out.append(Section("Accuracy against parameters", acc_text, image=ACC_PLOT, table=table,
                       image_alt="validation accuracy against parameter count, with the Pareto front, the "
                                 "budget and the seed report's Table 1"))
    wall = (f"The dashed line is the MACs budget, {fmt_int(study.macs_budget)}." if study.macs_budget
            else "The study has no MACs budget.")
    out.append(Section("Accuracy against MACs", [
        f"The same trials by their multiply-accumulates per image, counted exactly from the spec; the "
        f"Pareto front joins the complete trials no other complete trial beats on MACs and accuracy. {wall} "
        "Diamonds are the Table 1 models whose spec is known, at their exact MACs; the numbers are those of the "
        "table above."] + (["The right panel zooms on the corner of the Table 1 models."] if numbers["macs_zoomed"]
                           else []),
        image=ACC_MACS_PLOT, image_alt="validation accuracy against MACs per image, with the Pareto front, the "
                                       "MACs budget and the seed report's Table 1"))
    if numbers["front"]:
        body = [[str(r["trial"]), r["label"],
                 fmt_int(r["params"]), fmt_int(r["macs"]), pct(r["val_acc"]), str(r["epochs"])]
                for r in numbers["front"]]
        out.append(Section("The trade-off front", [
            "The complete trials no other complete trial beats on validation accuracy, parameters and MACs "
            "together, fewest parameters first: each is the most accurate network found at its size and cost. "
            "resnet-search best --front lists them, and resnet-search best --export DIR --trial N exports "
            "any of them as it exports the winner."],
            table=(["trial", "spec", "params", "MACs", "val acc", "epochs"], body)))

    curves = numbers["curves"]
    if curves is None:
        out.append(Section("Learning curves", ["No trial has trained yet: no learning curves."]))
    else:
        out.append(Section("Learning curves", [
            f"Validation accuracy after each epoch of the top {len(curves['shown'])} complete trials, "
            f"coloured and numbered by their rank in the top trials' table; trials stopped early by the pruner, "
            f"by divergence or by failure in grey ({len(curves['stopped'])})."],
            image=CURVES_PLOT, image_alt="validation accuracy per epoch"))
    out.append(_trust(trust))

    if imp.values is None:
        out.append(Section("Which dimensions matter", [imp.note + "."]))
    else:
        body = [[k, f"{v:.3f}"] for k, v in sorted(imp.values.items(), key=lambda kv: -kv[1])]
        out.append(Section("Which dimensions matter", [
            f"Optuna's parameter importances: {imp.note}. Few trials make these rough."],
            image=IMPORTANCE_PLOT, image_alt="parameter importances", table=(["parameter", "importance"], body)))

    if study.table_1:
        body = [[r["model"], r["description"], f"{r['reported_test_acc']:.2f}%", f"{r['reported_params']:,}",
                 fmt_int(r.get("params")), fmt_int(r.get("macs"))] for r in study.table_1]
        out.append(Section("The seed report's Table 1", [f"{REPORTED[0].upper()}{REPORTED[1:]}."], table=(
            ["model", "description", "reported test acc", "reported params", "exact params", "exact MACs"], body)))
    return out


def _trust(trust: list[dict]) -> Section:
    title = "Can early epochs be trusted?"
    if not trust:
        return Section(title, ["No complete trial has trained more than one epoch: nothing to compare yet."])
    n, last = trust[0]["trials"], trust[0]["last"]
    body = [[str(r["epoch"]), str(r["trials"]), "—" if r["spearman"] is None else f"{r['spearman']:.2f}"]
            for r in trust]
    return Section(title, [
        f"Spearman's rank correlation between the validation accuracy after epoch e, where the pruner decides, "
        f"and after the last epoch ({last}), over the {plural(n, 'complete trial')} that ran every epoch. "
        "Near 1 at an early epoch, the trials already stand in their final order there, so stopping the weak "
        "ones early (as the pruner does) loses little; well below 1, early stopping may discard trials that would have finished among the best."],
        table=(["epoch e", "trials", "Spearman rho with final accuracy"], body),
        notes=["Only trials the pruner let finish count, so this shows how far the order settles among them; "
               "— where fewer than 3 trials or equal accuracies leave nothing to rank."])


def _retrained(rows: list[dict], model_1: dict) -> Section:
    header = ["retrained", "spec", "params", "data set", "epochs", "seeds", "test acc", "min–max", "search val acc"]
    body = []
    for r in rows:
        body.append([r.get("label", f"trial {r.get('trial')}"), r.get("summary") or "?", fmt_int(r.get("params")),
                     _dataset_cell(r.get("dataset")), str(r.get("epochs", "?")), str(r.get("seeds", "—")),
                     f"{pct(r.get('mean'))} ± {100 * (r.get('std') or 0):.2f}",
                     f"{100 * r['min']:.2f}–{pct(r['max'])}" if r.get("min") is not None else "—",
                     pct(r.get("val_acc"))])
    body.append([f"Table 1 {model_1['model']}, as reported", model_1.get("summary") or "?",
                 fmt_int(model_1.get("params") or model_1["reported_params"]), "true CIFAR-10", "200", "—",
                 f"{model_1['reported_test_acc']:.2f}%", "—", "—"])
    return Section("Retrained on the full training set", [
        "Networks of this study trained again from scratch on the whole training split (nothing held out for "
        "validation), once per seed, and tested on the test split: the mean ± standard deviation and the range of "
        "their test accuracies over the seeds, beside the search's validation accuracy of the same trial and the "
        "seed report's Model 1 as reported. Test and validation accuracies are not the same measurement, and the "
        "data set, epochs and seeds of each row say what was measured."],
        table=(header, body))


def _dataset_cell(name: str | None) -> str:
    short = dataset_short(name)
    return short[4:] if short.startswith("the ") else short


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; color: #1a1a1a;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; background: #fff; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.meta { color: #666; margin-top: 0; font-size: 0.9em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: right; vertical-align: top; }
th { border-bottom: 2px solid #bbb; background: #fafafa; }
td.text, th.text { text-align: left; }
td.spec, th.spec { text-align: left; }
td.spec { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 0.95em; text-align: left;
          white-space: nowrap; }
p.note { color: #555; font-size: 0.85em; }
"""


def to_html(name: str, sections: list[Section], generated: str) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>resnet-search report: {e(name)}</title>", f"<style>{CSS}</style>", "</head>",
           "<body>", f"<h1>resnet-search report: study {e(name)}</h1>",
           f'<p class="meta">generated {e(generated)} from the study\'s storage</p>']
    for s in sections:
        out.append(f"<h2>{e(s.title)}</h2>")
        out += [f"<p>{e(p)}</p>" for p in s.paragraphs]
        if s.image:
            out.append(f'<figure><img src="{e(s.image)}" alt="{e(s.image_alt)}" width="1050"></figure>')
        if s.table:
            header, body = s.table
            cls = [' class="spec"' if h == "spec" else ' class="text"' if h in TEXT_COLUMNS else "" for h in header]
            out.append("<table><thead><tr>" + "".join(f"<th{c}>{e(h)}</th>" for c, h in zip(cls, header))
                       + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td{c}>{e(v)}</td>" for c, v in zip(cls, row)) + "</tr>" for row in body]
            out.append("</tbody></table>")
        out += [f'<p class="note">{e(n)}</p>' for n in s.notes]
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(name: str, sections: list[Section], generated: str) -> str:
    out = [f"# resnet-search report: study {name}", "", f"_generated {generated} from the study's storage_", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        if s.image:
            out += [f"![{s.image_alt}]({s.image})", ""]
        if s.table:
            header, body = s.table
            out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            out.append("|" + "|".join("---" if h in TEXT_COLUMNS else "---:" for h in header) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in body]
            out.append("")
        for n in s.notes:
            out += [f"_{n}_", ""]
    return "\n".join(out)
