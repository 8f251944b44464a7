"""The ``decoder`` command: parse arguments, call a pipeline, print one line on error.

No science lives here: every command calls a library or pipeline function.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import re
import sys
import traceback
from pathlib import Path

from . import __version__
from .errors import DecoderError, link_loop_error

log = logging.getLogger("decoder")


def _shown_path(path) -> str:
    """``path`` relative to the working folder when inside it, else absolute, quoted as a
    shell would need it. Not resolved: an annexed result is a symlink into the dataset's
    annex, and its own path is the one to show."""
    import os
    import shlex
    full = Path(os.path.abspath(path))
    try:
        text = str(full.relative_to(Path(os.path.abspath(Path.cwd()))))
    except ValueError:
        text = str(full)
    return shlex.quote(text)


def _cmd_run(args) -> int:
    from .config import apply_overrides, load_config
    from pipelines import run_config

    sets = list(args.set)
    if getattr(args, "scheduler", None):
        sets.append(f"compute.scheduler={args.scheduler}")
    if getattr(args, "jobs", None) is not None:
        sets.append(f"compute.n_jobs={args.jobs}")
    raw = apply_overrides(load_config(args.config), sets)
    out = Path(args.out) if args.out else Path("results") / Path(args.config).stem
    if getattr(args, "dry_run", False):
        from pipelines.plan import format_plan, plan
        print("\n".join(format_plan(plan(raw, data=args.data, out=out))))
        return 0
    from .results import check_writable
    check_writable(out)  # now, not after the whole run
    if getattr(args, "datalad", False):  # record with `datalad run`, replay with `datalad rerun`
        import json
        from pipelines import check_config
        from .data.datalad import datalad_run
        check_config(raw)  # a config error fails here, before anything is recorded
        path = datalad_run(args.config, out, data=args.data, overrides=sets)
        json.loads(path.read_text())  # the recorded command printed its own summary
        # its "results written to" names the folder from the dataset's top, where it ran
        from .data.datalad import dataset_root
        where = _shown_path(dataset_root(path))
        where = "this dataset" if where == "." else f"the dataset {where}"
        print(f"run recorded with 'datalad run' in {where}: results in {_shown_path(path)}; "
              "replay it with 'datalad rerun' there")
        return 0
    else:
        metrics = run_config(raw, data=args.data, out=out, config_path=args.config)
    summary = {k: metrics.get(k) for k in ("task", "n_samples", "accuracy",
                                            "balanced_accuracy", "roc_auc", "permutation_p")}
    parts = [f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()
             if v is not None]
    print(" ".join(parts))
    acc_ci, auc_ci = metrics.get("accuracy_ci95"), metrics.get("roc_auc_ci95")
    if acc_ci or auc_ci:  # subjects are independent: intervals of the pooled scores
        print("95% CI: " + ", ".join(
            f"{name} [{ci[0]:.3f}, {ci[1]:.3f}] ({how})"
            for name, ci, how in (("accuracy", acc_ci, "Wilson"), ("roc_auc", auc_ci, "DeLong"))
            if ci))
    boot = metrics.get("site_bootstrap")
    if boot:  # sites as the units: subjects of one site are not independent
        print(f"95% CI with sites resampled ({boot['n_clusters']} sites, BCa bootstrap): "
              + ", ".join(f"{name} [{ci[0]:.3f}, {ci[1]:.3f}]" for name, ci in
                          (("accuracy", boot.get("accuracy_ci95")),
                           ("roc_auc", boot.get("roc_auc_ci95"))) if ci))
    reps = metrics.get("repeats")
    if reps:  # the pooled scores above average the probabilities over the repetitions
        print(f"per repetition ({reps['n_repeats']}): accuracy {reps['accuracy_mean']:.3f} ± "
              f"{reps['accuracy_sd']:.3f}, roc_auc {reps['roc_auc_mean']:.3f} ± "
              f"{reps['roc_auc_sd']:.3f} (mean ± sd)")
    sl = metrics.get("searchlight")
    if sl:
        line = (f"searchlight ({sl['radius_mm']:g} mm, {sl['n_spheres']} spheres): peak "
                f"accuracy {sl['peak_accuracy']:.3f} at "
                f"({', '.join(f'{v:g}' for v in sl['peak_xyz_mm'])}) mm")
        if sl.get("n_permutations"):
            line += (f"; {sl['n_significant_fwe']} spheres with p_FWE ≤ {sl['fwe_level']:g} "
                     f"({sl['n_permutations']} permutations)")
        print(line + " → searchlight_accuracy.nii.gz")
    print(f"results written to {out}/metrics.json")
    return 0


def _cmd_report(args) -> int:
    from .report import run_folder, write_report
    from .report._sweep import is_sweep_folder, write_sweep_report
    from .results import check_writable
    given = Path(args.run_dir)
    if given.name == "sweep.json" and given.is_file():   # (its sweep.json names it too)
        given = given.parent
    if is_sweep_folder(given):   # a sweep's folder: its page of every variant
        check_writable(given)
        print(f"sweep page written to {write_sweep_report(given)}")
        return 0
    run_dir = run_folder(args.run_dir)  # (its metrics.json names it too)
    if run_dir.is_dir():  # (a missing folder is named by write_report)
        check_writable(run_dir)
    path = write_report(run_dir)
    print(f"report written to {path}")
    return 0


def _cmd_predict(args) -> int:
    from pipelines.biomarker import predict_cli
    return predict_cli(args)


def _cmd_compare(args) -> int:
    from .evaluation.compare import compare_runs
    # compare_runs checks --out before any work and writes it at the end
    res = compare_runs(args.run_a, args.run_b, n_permutations=args.n_permutations,
                       random_state=args.random_state, out=args.out)
    acc = res["accuracy"]
    unit = "subjects" if acc["unit"] == "subject" else f"samples in {acc['n_units']} folds"
    print(f"{res['task']}: B ({args.run_b}) vs A ({args.run_a}), paired on "
          f"{res['n_paired']} {unit}")
    diffs = res.get("config_differences") or []
    from .config import differences_text
    missing = res.get("config_missing") or []
    print("B differs from A in: " + (
        f"not known (no config recorded in the metrics.json of {' and '.join(missing)})"
        if missing else differences_text(diffs) if diffs else "nothing (the same config)"))
    print(f"accuracy  A {res['a']['accuracy']:.3f}  B {res['b']['accuracy']:.3f}  "
          f"B-A {acc['diff']:+.3f}  p={acc['p']:.3g} ({acc['method']}; right only with B: "
          f"{acc['b_only']}, only with A: {acc['a_only']})")
    auc = res["roc_auc"]
    if auc is not None:
        lo, hi = auc["ci95"]
        print(f"ROC AUC   A {auc['auc_a']:.3f}  B {auc['auc_b']:.3f}  B-A {auc['diff']:+.3f} "
              f"[95% CI {lo:+.3f}, {hi:+.3f}]  p={auc['p']:.3g} (DeLong)")
    ct = res.get("corrected_t") or {}
    if ct.get("available"):
        parts = [f"{name} B-A {t['diff']:+.3f} [95% CI {t['ci95'][0]:+.3f}, {t['ci95'][1]:+.3f}] "
                 f"p={t['p']:.3g}"
                 for name, t in (("accuracy", ct["accuracy"]), ("ROC AUC", ct["roc_auc"])) if t]
        print(f"corrected resampled t over {ct['accuracy']['n_units']} folds (includes "
              f"training-set variability): " + ", ".join(parts))
    elif ct:
        print(f"corrected resampled t: not available ({ct['reason']})")
    if args.out:
        print(f"comparison written to {args.out}")
    return 0


def _cmd_sweep(args) -> int:
    from pipelines.sweep import sweep_cli
    return sweep_cli(args)


def _cmd_reproduce(args) -> int:
    from pipelines.reproduce import reproduce_cli
    return reproduce_cli(args)


def _cmd_fetch(args) -> int:
    from .data.fetch import fetch_cli
    return fetch_cli(args)


def _options(parser) -> list:
    """The option strings a parser takes (``--out``, ``-J``, ``--jobs``, …)."""
    return [o for a in parser._actions for o in a.option_strings]


class _Parser(argparse.ArgumentParser):
    """argparse with the command's one-line errors: the problem and the fix, no usage
    block (argparse prints the top-level usage even for a subcommand's mistake)."""

    def error(self, message):
        fix = f"'{self.prog} --help' lists its options"
        wrong = re.match(r"argument (\S+): invalid (\w+) value", message)
        if wrong:
            kind = {"float": "a number", "int": "a whole number"}.get(wrong.group(2), "a value")
            fix = f"give {wrong.group(1)} {kind}; " + fix
        choice = re.match(r"argument command: invalid choice: '([^']*)'", message)
        if choice:
            self._option_before_command(choice.group(1))
            close = difflib.get_close_matches(choice.group(1), self._choices(), n=1)
            message = f"'{choice.group(1)}' is not a command"
            fix = (f"did you mean 'decoder {close[0]}'? " if close else "") + \
                f"'decoder --help' lists the commands ({', '.join(self._choices())})"
        if message == "the following arguments are required: command":
            message = "no command given"
            fix = (f"give one of: {', '.join(self._choices())} "
                   "('decoder --help' says what each does)")
        print(f"decoder: error: {message} — fix: {fix}", file=sys.stderr)
        sys.exit(2)

    def _option_before_command(self, word) -> None:
        """Stop with the fix when ``word``, read as the command, is the value of a command's
        option given before the command (``decoder --out x run …``: argparse reads ``x``)."""
        argv = self._words()
        if word not in argv:
            return
        i = argv.index(word)
        commands = self._commands()
        later = [a for a in argv[i + 1:] if a in commands]
        if not (i and argv[i - 1].startswith("-") and later):
            return
        flag = argv[i - 1]
        if flag in _options(commands[later[0]]):
            print(f"decoder: error: {flag} {word}: options of decoder {later[0]} go after the "
                  f"command — fix: write decoder {later[0]} … {flag} {word}", file=sys.stderr)
            sys.exit(2)

    def _commands(self) -> dict:
        """The subcommands' parsers, by name (empty for a subcommand's own parser)."""
        return next((a.choices for a in self._actions
                     if isinstance(a, argparse._SubParsersAction)), {})

    def _choices(self) -> list:
        return list(self._commands())

    def _words(self) -> list:
        """The command line as given (``main``'s argv, set on the parser), as strings."""
        return [str(a) for a in getattr(self, "argv", None) or []]

    def unknown_arguments(self, command, extra) -> None:
        """Refuse arguments the command does not take, naming its closest option (or, for
        one of its options given before the command, saying where it goes)."""
        options = _options(self._commands()[command])
        flags = [x.split("=", 1)[0] for x in extra if x.startswith("-") and x != "--"]
        argv = self._words()
        before = argv[:argv.index(command)] if command in argv else []
        known = [f for f in flags if f in options or (f[:2] in options and f[1] != "-")]
        if any(x in before and x.split("=", 1)[0] in known for x in extra):
            # an option of the command, given before it (decoder --data x run ...)
            print(f"decoder: error: {' '.join(extra)}: options of decoder {command} go after "
                  f"the command — fix: write decoder {command} … {' '.join(extra)}",
                  file=sys.stderr)
            sys.exit(2)
        lower = {o.lower(): o for o in options}
        close = difflib.get_close_matches(flags[0].lower(), list(lower), n=1, cutoff=0.7) \
            if flags else []
        hint = f"did you mean {lower[close[0]]}? " if close else ""
        if flags and flags[0] in options:   # after '--': read as a value, not an option
            hint = f"put {flags[0]} before '--'; "
        print(f"decoder: error: decoder {command} does not take {' '.join(extra)} — fix: "
              f"{hint}'decoder {command} --help' lists its options", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="decoder", description="Leakage-free, fast brain decoding from fMRI.",
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="examples:\n"
                       "  decoder run configs/haxby.yaml              # the embedded Haxby sample\n"
                       "  decoder run configs/abide.yaml --data DIR   # ABIDE autism biomarker\n"
                       "  decoder predict MODEL sub-01.1D --age 12    # one new subject\n"
                       "  decoder reproduce results/haxby             # rerun and compare\n"
                       "  decoder fetch --list                        # datasets to fetch\n"
                       "'decoder COMMAND --help' lists a command's options.")
    p.add_argument("--version", action="version", version=f"decoder {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show full tracebacks on errors")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log progress")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", parents=[common], help="run a pipeline from a YAML config")
    r.add_argument("config", help="YAML config, e.g. configs/haxby.yaml")
    r.add_argument("--data", help="data root (BIDS folder, ABIDE root or DataLad dataset); "
                                  "default: the config's dataset.root or the embedded sample")
    r.add_argument("--out", help="output folder (default: results/<config file name without .yaml>)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set classes=face,house (repeatable)")
    r.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address (tcp://host:8786); same as "
                        "--set compute.scheduler=ADDRESS")
    r.add_argument("-J", "--jobs", type=int, metavar="N",
                   help="local worker processes (-1: one per core); same as "
                        "--set compute.n_jobs=N (results do not depend on it)")
    r.add_argument("--datalad", action="store_true",
                   help="record the run with 'datalad run' in the dataset holding --out")
    r.add_argument("--dry-run", action="store_true",
                   help="say what the run would read, get and write, and check its subjects, "
                        "classes and folds, without running, getting or writing anything")
    r.set_defaults(func=_cmd_run)

    rep = sub.add_parser("report", parents=[common],
                         help="(re)write report.html for a run directory (sweep.html for a "
                              "sweep's folder)")
    rep.add_argument("run_dir", help="run directory written by 'decoder run', or a folder "
                                     "written by 'decoder sweep'")
    rep.set_defaults(func=_cmd_report)

    pr = sub.add_parser("predict", parents=[common],
                        help="predict subjects with a saved model (one, or a cohort)")
    pr.add_argument("model", help="model file (.skops) written by 'decoder run' (a biomarker "
                                  "model, or a category model saved with save_model: true)")
    pr.add_argument("input", nargs="+",
                    help="time series (.1D/.tsv/.csv) or preprocessed bold NIfTI; several "
                         "files (a cohort) give a table of predictions; for a category "
                         "model, one or more runs (scored each and pooled)")
    pr.add_argument("--participants",
                    help="TSV/CSV with a row per subject (subject, and optionally site, age, "
                         "sex, mean_fd, diagnosis; ABIDE's phenotypic CSV works): with "
                         "diagnoses, the model's accuracy on them is reported")
    pr.add_argument("--atlas", help="labels atlas NIfTI (for a NIfTI input)")
    pr.add_argument("--site", help="the subject's site, for a model with ComBat (an unknown "
                                   "site gets no site adjustment; the subjects of a new site "
                                   "predicted together get their own)")
    pr.add_argument("--age", type=float, help="age in years, for a model with ComBat")
    pr.add_argument("--sex", help="male/female (or ABIDE's code: 1 male, 2 female), for a "
                                  "model with ComBat and the accuracy of the subject's group")
    pr.add_argument("--mean-fd", type=float, dest="mean_fd",
                    help="mean framewise displacement (mm), for a model trained with "
                         "confounds.remove: [mean_fd] (default: the training median)")
    pr.add_argument("--events", help="for a category model and one run: the run's "
                                     "events.tsv, to score its decoded volumes and blocks "
                                     "(default: the BIDS _events.tsv beside each image, "
                                     "if any)")
    pr.add_argument("--resample", action="store_true",
                    help="for a category model: a run on another grid of the same space "
                         "(e.g. MNI at another resolution) is resampled onto the model's "
                         "grid instead of refused")
    pr.add_argument("--skip-bad", action="store_true", dest="skip_bad",
                    help="for a cohort: a file that cannot be predicted gets its reason in "
                         "the table's error column and the others go on; for several runs "
                         "of a category model, a run that cannot be decoded is listed under "
                         "'failed' in the summary (default: stop)")
    pr.add_argument("--out", help="JSON file for one subject's prediction (default "
                                  "<input name>_prediction.json here); for a cohort, the table "
                                  "(default predictions.tsv, with a .json summary beside)")
    pr.set_defaults(func=_cmd_predict)

    c = sub.add_parser("compare", parents=[common],
                       help="paired test of two runs on the same samples (B against A)")
    c.add_argument("run_a", help="run directory of the reference (A)")
    c.add_argument("run_b", help="run directory of the variant (B)")
    c.add_argument("--out", help="JSON file for the comparison")
    c.add_argument("--n-permutations", type=int, default=10000, dest="n_permutations",
                   help="random sign flips when there are more than 20 folds (default 10000)")
    c.add_argument("--random-state", type=int, default=0, dest="random_state",
                   help="seed of the random sign flips (default 0)")
    c.set_defaults(func=_cmd_compare)

    rp = sub.add_parser("reproduce", parents=[common],
                        help="rerun a finished run from its recorded config and inputs, and "
                             "compare every result (exit 3 when they differ)")
    rp.add_argument("run_dir", help="run directory written by 'decoder run' (only read)")
    rp.add_argument("--data", help="data root (default: the recorded one if it exists here; "
                                   "for a run of the embedded sample, this installation's copy; "
                                   "otherwise --data is needed)")
    rp.add_argument("--out", help="folder for the rerun and reproduction.json "
                                  "(default: RUN_DIR-reproduced)")
    rp.add_argument("-J", "--jobs", type=int, help="compute.n_jobs for the rerun (results do "
                                                   "not depend on it)")
    rp.set_defaults(func=_cmd_reproduce)

    sw = sub.add_parser("sweep", parents=[common],
                        help="run every combination of --vary values and compare each "
                             "variant with the first (paired tests, Holm-adjusted)")
    sw.add_argument("config", help="YAML config, e.g. configs/abide.yaml")
    sw.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                    help="a config key and its values (repeatable); the first value of "
                         "each is the reference; list values as '[[a], [a, b]]'")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key in every variant (repeatable)")
    sw.add_argument("--data", help="data root for every variant")
    sw.add_argument("--out", help="sweep folder (default: results/<config name>-sweep)")
    sw.add_argument("-J", "--jobs", type=int, help="compute.n_jobs of every variant")
    sw.add_argument("--resume", action="store_true",
                    help="reuse variants whose folder already holds a finished run of the "
                         "same config on the same, unchanged input files")
    sw.add_argument("--dry-run", action="store_true",
                    help="plan every variant (what it would read and how it would be "
                         "evaluated) without running, getting or writing anything")
    sw.set_defaults(func=_cmd_sweep)

    f = sub.add_parser("fetch", parents=[common], help="fetch a dataset declared in data_manifest.yaml")
    f.add_argument("name", nargs="?",
                   help="a dataset of data_manifest.yaml (see --list), or a DataLad dataset's "
                        "URL or path")
    f.add_argument("--list", action="store_true",
                   help="list the datasets of the manifest with version, licence, size and "
                        "citation")
    f.add_argument("--subjects", nargs="*", metavar="ID",
                   help="only these subjects (e.g. 1 2; for ABIDE a SUB_ID or FILE_ID; for "
                        "a dataset given by URL or path, its sub-ID folders and theirs in "
                        "derivatives/)")
    f.add_argument("--to", help="target folder (default: data/NAME)")
    f.add_argument("-J", "--jobs", type=int, default=1, help="parallel downloads (default 1)")
    f.add_argument("--base-url", metavar="URL",
                   help="replace the source (a mirror, a local server or a RIA store)")
    f.add_argument("--manifest", metavar="YAML",
                   help="another manifest (default: data_manifest.yaml)")
    f.set_defaults(func=_cmd_fetch)
    return p


class _PipeSafeStdout:
    """Standard output that a reader closing early (``decoder run … | head``) cannot stop:
    the rest of the output is dropped, and the command still finishes and writes its
    results (a BrokenPipeError would otherwise end it before they are written)."""

    def __init__(self, stream):
        self._stream, self.broken = stream, False

    def write(self, text):
        if not self.broken:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self.broken = True
        return len(text)

    def flush(self):
        if not self.broken:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self.broken = True

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv=None) -> int:
    stdout = sys.stdout
    sys.stdout = _PipeSafeStdout(stdout)
    try:
        return _main(argv)
    finally:
        broken = sys.stdout.broken
        sys.stdout = stdout
        if broken:   # nothing more can reach the reader: silence the flush at exit
            import os
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
            except (OSError, ValueError, AttributeError):
                pass


def _main(argv=None) -> int:
    parser = build_parser()
    parser.argv = sys.argv[1:] if argv is None else argv   # for errors that need the words
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.unknown_arguments(args.command, extra)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.debug:
        import warnings
        warnings.filterwarnings("ignore")
    try:
        return int(args.func(args) or 0)
    except DecoderError as err:
        if args.debug:
            traceback.print_exc()
        print(f"decoder: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("decoder: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an unexpected failure still gets one line
        if args.debug:
            traceback.print_exc()
        loop = link_loop_error(err)   # a path the user gave, wherever it was resolved
        if loop is not None:
            print(f"decoder: error: {loop}", file=sys.stderr)
            return 2
        msg = " ".join(str(err).split()) or type(err).__name__
        print(f"decoder: error: {type(err).__name__}: {msg} — fix: rerun with --debug "
              "for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
