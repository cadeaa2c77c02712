"""Parameter counts of an AS-GCN per part, next to the reference figures of the paper's public code.

``python -m asgcn_lightning.models.summary`` prints the table for the reference configuration
(NTU-60); ``--layout openpose25 --num-class 5`` and the other options size it for another data set.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from torch import nn

from asgcn_lightning.errors import exit_on_user_error
from asgcn_lightning.models.asgcn import ASGCN
from asgcn_lightning.skeleton.layouts import BUILTIN_LAYOUTS, make_layout

# The reference implementation's counts for NTU-60 (25 joints, C=3, 60 classes).
REFERENCE = {"backbone + recognition": 4_797_267, "prediction head": 2_190_211, "AIM": 417_798,
             "total": 7_405_276}


def count(module: nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def parameter_counts(network: ASGCN) -> dict[str, int]:
    """Parameters per part; the backbone part holds everything outside the AIM and the prediction head."""
    total = count(network)
    aim, prediction = count(network.aim), count(network.predictor)
    return {"backbone + recognition": total - aim - prediction, "prediction head": prediction, "AIM": aim,
            "total": total}


def format_table(counts: dict[str, int], reference: dict[str, int] | None = None) -> str:
    """A plain-text table; with ``reference``, its figures and the relative difference too."""
    lines = [f"{'part':<24}{'parameters':>14}" + (f"{'reference':>14}{'diff':>9}" if reference else "")]
    for part, value in counts.items():
        line = f"{part:<24}{value:>14,}"
        if reference:
            line += f"{reference[part]:>14,}{100 * (value - reference[part]) / reference[part]:>+8.2f}%"
        lines.append(line)
    return "\n".join(lines)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", default="ntu25", choices=sorted(BUILTIN_LAYOUTS))
    parser.add_argument("--num-class", type=int, default=60)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--max-hop", type=int, default=4)
    parser.add_argument("--num-alink-types", type=int, default=3)
    parser.add_argument("--no-alinks", action="store_true", help="S-links only")
    parser.add_argument("--no-prediction", action="store_true", help="without the prediction head")
    args = parser.parse_args(argv)
    network = ASGCN(args.num_class, make_layout(args.layout), in_channels=args.in_channels,
                    max_hop=args.max_hop, num_alink_types=args.num_alink_types, use_alinks=not args.no_alinks,
                    prediction_head=not args.no_prediction)
    reference_config = (args.layout, args.num_class, args.in_channels, args.max_hop, args.num_alink_types,
                        args.no_alinks, args.no_prediction) == ("ntu25", 60, 3, 4, 3, False, False)
    print(f"AS-GCN, layout {args.layout} ({network.layout.num_joints} joints), {args.num_class} classes")
    print(format_table(parameter_counts(network), REFERENCE if reference_config else None))


if __name__ == "__main__":
    main()
