"""The tier plan of workers.strategy: which updates `auto` and explicit methods try, and the
options of the non-convex second-order variants."""

from __future__ import annotations

from workers.strategy import tiers, update_options


def test_tier_plans():
    assert tiers("auto", True) == [("second_order", None), ("retrain", None)]
    assert tiers("second_order", True) == [("second_order", None)]
    assert tiers("auto", False) == [
        ("first_order", None),
        ("second_order", "damped"),
        ("second_order", "newton"),
        ("retrain", None),
    ]
    assert tiers("second_order", False) == [("second_order", "damped"), ("second_order", "newton")]
    assert tiers("first_order", False) == [("first_order", None)]
    # options that fix the step leave one second-order attempt
    for fixed in ({"damping": 1.0}, {"damping_relative": 0.1}, {"line_search": False}):
        assert tiers("auto", False, fixed) == [
            ("first_order", None),
            ("second_order", None),
            ("retrain", None),
        ]


def test_second_order_variant_options():
    damped = update_options("second_order", False, {}, 5000, "cpu", "damped")
    assert damped["last_k_layers"] == 1 and damped["damping_relative"] == 1e-3
    assert "line_search" not in damped
    newton = update_options("second_order", False, {}, 5000, "cpu", "newton")
    assert newton["line_search"] is True and "damping_relative" not in newton
    # more than the last layer: the full network's Hessian is indefinite → damped, no line search
    deep = update_options("second_order", False, {"last_k_layers": 2}, 5000, "cpu", "newton")
    assert deep["damping_relative"] == 0.01 and "line_search" not in deep
    # convex models get none of this
    convex = update_options("second_order", True, {}, 5000, "cpu")
    assert "last_k_layers" not in convex and "damping_relative" not in convex
