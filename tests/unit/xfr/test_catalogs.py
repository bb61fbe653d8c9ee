"""Tests of xfr/catalogs.py: catalogs + current members -> zones to add, remove, reset, regroup."""

from __future__ import annotations

from authd.xfr.catalogs import Membership, Plan, apply, reconcile, removal_held
from authd.zone import names
from authd.zone.catalog import Catalog, Member

A, B = names.key_from_text("cat-a.example."), names.key_from_text("cat-b.example.")


def z(label: str) -> bytes:
    return names.key_from_text(f"{label}.example.")


def cat(origin: bytes, *members: Member, serial: int = 1) -> Catalog:
    return Catalog(origin, serial, {m.zone: m for m in members})


def m(label: str, uid: str, group: str | None = None, coo: bytes | None = None) -> Member:
    return Member(z(label), uid.encode(), group, coo)


def ms(label: str, catalog: bytes, uid: str, group: str | None = None) -> Membership:
    return Membership(z(label), catalog, uid.encode(), group)


def test_first_version_adds_every_member() -> None:
    plan = reconcile({A: cat(A, m("one", "u1"), m("two", "u2", "signed"))}, {}, set())
    assert plan.add == (ms("one", A, "u1"), ms("two", A, "u2", "signed"))
    assert not (plan.remove or plan.reset or plan.regroup)


def test_removed_reset_regrouped_and_unchanged() -> None:
    current = {
        z("gone"): ms("gone", A, "u0"),
        z("same"): ms("same", A, "u1"),
        z("reset"): ms("reset", A, "u2"),
        z("group"): ms("group", A, "u3"),
    }
    new = cat(A, m("same", "u1"), m("reset", "u9"), m("group", "u3", "other"), m("new", "u4"))
    plan = reconcile({A: new}, current, set())
    assert plan.remove == (ms("gone", A, "u0"),)
    assert plan.reset == (ms("reset", A, "u9"),)
    assert plan.regroup == (ms("group", A, "u3", "other"),)
    assert plan.add == (ms("new", A, "u4"),)
    after = apply(current, plan)
    assert set(after) == {z("same"), z("reset"), z("group"), z("new")}
    assert reconcile({A: new}, after, set()).empty  # applied: nothing left to do


def test_configured_zone_wins_and_a_member_that_becomes_configured_is_released() -> None:
    catalogs = {A: cat(A, m("one", "u1"), m("two", "u2"))}
    plan = reconcile(catalogs, {}, {z("two")})
    assert [x.zone for x in plan.add] == [z("one")] and plan.shadowed == (z("two"),)
    current = {z("one"): ms("one", A, "u1"), z("two"): ms("two", A, "u2")}
    plan = reconcile(catalogs, current, {z("two")})
    assert plan.release == (ms("two", A, "u2"),) and not plan.remove  # still served: config
    assert set(apply(current, plan)) == {z("one")}


def test_a_catalog_that_no_longer_exists_removes_only_its_own_members() -> None:
    current = {z("one"): ms("one", A, "u1"), z("two"): ms("two", B, "u2")}
    plan = reconcile({B: cat(B, m("two", "u2"))}, current, set())
    assert plan.remove == (ms("one", A, "u1"),) and plan.removed_from(A) == 1
    assert plan.removed_from(B) == 0


def test_coo_moves_a_member_keeping_state_with_the_same_unique_id() -> None:
    current = {z("one"): ms("one", A, "u1")}
    # B lists it too, but A (the owner) does not hand it over: A keeps it.
    plan = reconcile({A: cat(A, m("one", "u1")), B: cat(B, m("one", "u1"))}, current, set())
    assert plan.empty
    # A's entry names B in coo: it moves to B, same unique-id: its state is kept.
    plan = reconcile({A: cat(A, m("one", "u1", coo=B)), B: cat(B, m("one", "u1"))}, current, set())
    assert plan.regroup == (ms("one", B, "u1"),) and not plan.reset and not plan.remove
    # ... with another unique-id in B it is reset (RFC 9432 5.6).
    plan = reconcile({A: cat(A, m("one", "u1", coo=B)), B: cat(B, m("one", "u7"))}, current, set())
    assert plan.reset == (ms("one", B, "u7"),)
    # A then drops it: B keeps serving it, nothing is removed.
    moved = {z("one"): ms("one", B, "u1")}
    assert reconcile({A: cat(A), B: cat(B, m("one", "u1"))}, moved, set()).empty


def test_coo_naming_a_catalog_that_does_not_list_the_zone_changes_nothing() -> None:
    current = {z("one"): ms("one", A, "u1")}
    assert reconcile({A: cat(A, m("one", "u1", coo=B)), B: cat(B)}, current, set()).empty


def test_removal_guard_counts_only_the_catalogs_own_members() -> None:
    current = {z(f"m{i}"): ms(f"m{i}", A, f"u{i}") for i in range(20)}
    current[z("b")] = ms("b", B, "ub")
    keep = [m(f"m{i}", f"u{i}") for i in range(9)]  # 11 of 20 removed: 55%
    plan = reconcile({A: cat(A, *keep), B: cat(B, m("b", "ub"))}, current, set())
    assert plan.removed_from(A) == 11
    reason = removal_held(plan, current, A, 0.5, 10)
    assert reason is not None and "removes 11 of 20 members" in reason
    assert removal_held(plan, current, A, 0.6, 10) is None  # within a larger share
    keep = [m(f"m{i}", f"u{i}") for i in range(10)]  # 10 of 20: exactly the share, allowed
    plan = reconcile({A: cat(A, *keep), B: cat(B, m("b", "ub"))}, current, set())
    assert removal_held(plan, current, A, 0.5, 10) is None


def test_small_catalogs_are_not_guarded() -> None:
    current = {z(f"m{i}"): ms(f"m{i}", A, f"u{i}") for i in range(10)}
    plan = reconcile({A: cat(A)}, current, set())
    assert plan.removed_from(A) == 10
    assert removal_held(plan, current, A, 0.5, 10) is None  # 10 members: not more than 10
    current[z("m10")] = ms("m10", A, "u10")
    plan = reconcile({A: cat(A)}, current, set())
    assert removal_held(plan, current, A, 0.5, 10) is not None


def test_plan_counts() -> None:
    assert Plan().empty
    plan = reconcile({A: cat(A, m("one", "u1"))}, {z("two"): ms("two", A, "u2")}, set())
    assert plan.counts() == {"added": 1, "removed": 1, "reset": 0, "regrouped": 0}
