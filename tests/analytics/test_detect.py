"""New versions are judged automatically: a regression is flagged once, a pass is kept, too little is retried."""

from __future__ import annotations

import pytest

from interventions import regressions
from interventions.models import RegressionFlag, VersionCheck
from perfops.analytics import detect
from tests.analytics.test_gate import versions  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db


def test_the_check_flags_the_slow_version_once_and_remembers_the_rest(versions, engineer):  # noqa: F811
    counts = detect.check_new_versions()
    checks = dict(VersionCheck.objects.values_list("version", "verdict"))
    assert checks == {"2.0.0": "fail", "2.1.0": "pass", "3.0.0": "insufficient"}
    assert counts["flagged"] == 1
    flagged = RegressionFlag.objects.get()
    assert (flagged.version, flagged.source, flagged.baseline_version) == ("2.0.0", "analytics", "1.0.0")
    assert flagged.summary.startswith("2.0.0 against 1.0.0: Requests are typically")
    assert flagged.evidence["decision"]["verdict"] == "fail"
    # A dismissed flag is not raised again; only the version without enough data is looked at again.
    regressions.dismiss(flagged, engineer, "known warm-up")
    again = detect.check_new_versions()
    assert (again["checked"], again["flagged"]) == (1, 0)
    assert RegressionFlag.objects.count() == 1
