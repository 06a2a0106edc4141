# SPDX-License-Identifier: MIT
"""Fixtures for the integration tests.

- `dovecot`: one private Dovecot per test module, with the backend under
  test: sqlbox (the plugin from $SQLBOX_BUILD, default build/default), or
  the backend named by SQLBOX_TEST_BACKEND (maildir, sdbox) when the suite
  checks itself before the plugin works. A module can pass options to the
  instance with a module-level DOVECOT_OPTIONS dict (extra_conf, ...).
- `oracle` / `sdbox_oracle`: one maildir / sdbox instance for the whole
  run, for comparisons: the same commands must give the same answers.
- `user`: a fresh user for each test (added to the running instance).
- After each test every instance it used is checked for Error, Panic and
  Fatal log lines; an unexpected one fails the test and the log is shown.
  Expected lines are declared with @pytest.mark.allow_log(regex, ...) or by
  appending regexes to the `allow_log` fixture.

If the sqlbox plugin is not built, every test using `dovecot` errors with a
message saying so: nothing is skipped.
"""

import pytest

from harness import (CONTAINER_IMAGE, DovecotInstance, InstanceError,
                     backend_under_test, build_dir)

INSTANCE_FIXTURES = ("dovecot", "oracle", "sdbox_oracle")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_log(*regexes): Error/Panic/Fatal log lines the "
        "test expects")


def pytest_report_header(config):
    return ["sqlbox integration: backend %s, plugin dir %s%s" % (
        backend_under_test(), build_dir(),
        ", Dovecot in container %s" % CONTAINER_IMAGE
        if CONTAINER_IMAGE else "")]


def _start(backend, **options):
    inst = DovecotInstance(backend, **options)
    error = None
    try:
        inst.start()
    except InstanceError as e:
        error = str(e)
    if error is not None:
        inst.close()
        pytest.fail("cannot start a %s Dovecot: %s" % (backend, error),
                    pytrace=False)
    if inst.is_sqlbox:
        _check_plugin_loads(inst)
    return inst


def _check_plugin_loads(inst):
    """Undefined symbols only show at dlopen(): load the plugin once
    through doveadm and fail clearly if that does not work."""
    probe = inst.new_user()
    error = None
    try:
        inst.doveadm("mailbox", "list", "-u", probe)
    except InstanceError as e:
        error = str(e)
    if error is not None:
        log = inst.log_text()
        inst.close()
        pytest.fail("the sqlbox plugin (%s) does not load or work: %s\n"
                    "--- log ---\n%s" % (inst.plugin_path, error, log),
                    pytrace=False)


def _finish(inst, allowed=()):
    """Stops the instance and fails on problems logged after the last
    test's check (at shutdown, or by a late session)."""
    since = getattr(inst, "checked_upto", 0)
    try:
        inst.close_clients()
        inst.wait_sessions_closed(since)
        if inst.running:
            inst.stop()
        problems = inst.log_problems(allowed, since)
        text = inst.log_text(since)
    finally:
        inst.close()
    if problems:
        pytest.fail("unexpected problems in the %s log after the last "
                    "test:\n  %s\n--- log ---\n%s" % (
                        inst.backend, "\n  ".join(problems), text),
                    pytrace=False)


@pytest.fixture(scope="module")
def dovecot(request):
    options = dict(getattr(request.module, "DOVECOT_OPTIONS", {}))
    allowed = getattr(request.module, "ALLOWED_LOG", ())
    inst = _start(backend_under_test(), **options)
    yield inst
    _finish(inst, allowed)


@pytest.fixture(scope="session")
def oracle():
    """Dovecot's own maildir (Maildir++), for answers to compare with."""
    inst = _start("maildir", user_pool=100)
    yield inst
    _finish(inst)


@pytest.fixture(scope="session")
def sdbox_oracle():
    inst = _start("sdbox", user_pool=100)
    yield inst
    _finish(inst)


@pytest.fixture
def user(dovecot):
    """A fresh user on the instance under test."""
    return dovecot.new_user()


@pytest.fixture
def allow_log():
    """Append regexes for Error/Panic/Fatal lines this test expects."""
    return []


class _LogGuard:
    def __init__(self, instances, allowed):
        self.marks = [(i, i.log_size()) for i in instances]
        self.allowed = allowed

    def check(self):
        """Closes the test's clients, waits for their sessions to end and
        returns (problems, log excerpts)."""
        problems = []
        logs = []
        for inst, mark in self.marks:
            inst.close_clients()
            inst.wait_sessions_closed(mark)
            bad = inst.log_problems(self.allowed, mark)
            text = inst.log_text(mark)
            inst.checked_upto = inst.log_size()
            if bad:
                problems += ["%s: %s" % (inst.backend, b) for b in bad]
            logs.append((inst, text))
        return problems, logs


class _Allowed:
    """The marker's patterns plus whatever the test appended to
    allow_log (read at check time, after the test ran)."""

    def __init__(self, fixed, live):
        self.fixed = fixed
        self.live = live

    def __iter__(self):
        return iter(list(self.fixed) + list(self.live))


@pytest.fixture(autouse=True)
def _log_guard(request, allow_log):
    instances = [request.getfixturevalue(name) for name in INSTANCE_FIXTURES
                 if name in request.fixturenames]
    fixed = []
    for mark in request.node.iter_markers("allow_log"):
        fixed.extend(mark.args)
    request.node._sqlbox_guard = _LogGuard(instances,
                                           _Allowed(fixed, allow_log))
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if call.when != "call":
        return
    guard = getattr(item, "_sqlbox_guard", None)
    if guard is None:
        return
    problems, logs = guard.check()
    for inst, text in logs:
        if rep.failed or problems:
            rep.sections.append(("Dovecot log (%s, %s)" % (
                inst.backend, inst.log_path), text or "(empty)"))
    if problems and not rep.failed:
        rep.outcome = "failed"
        rep.longrepr = ("unexpected Error/Panic/Fatal lines in the Dovecot "
                        "log:\n  " + "\n  ".join(problems))
    elif problems:
        rep.sections.append(("unexpected log problems",
                             "\n".join(problems)))

