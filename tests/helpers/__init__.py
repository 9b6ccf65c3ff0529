"""What several test modules share. A test module imports from here, from ``tests.fakes`` and
from the code under test, never from another test module nor from ``conftest``
(``tests/test_house.py`` checks it); a fixture that several modules use lives in
``tests/conftest.py`` or here, imported by the modules that use it.

    bot            RunningBot, running_bot, serve_in_thread, wait_for, buttons
    clock          Clock, the one injected clock
    policy         POLICY, the base policy, and how a test extends it
    gate           built_gate (the one way to build a Gate), notifiers, the user-group
                   directory, the world fixture
    decisions      the decision tests' gate (also raced by test_gate_race)
    grants         the grants service's world
    slack_flow     driving the bot as Slack does and reading back what it did
    modal          the request form: shortcuts, searches, submissions
    scale_flow     scale and rollback through the bot
    access         the access grants' policy and App Home
    slack_http     signing raw bodies and reading logs for the /slack/events tests
    request_views, grant_views   views as the notifiers get them
    policy_cases   generated policies and requests for the policy's properties
    serve          the real ``opsgate`` command in a child process
    kubectl        the real kubectl against a fake cluster
    tools          kubectl, OpenBao and PostgreSQL binaries: skip, or fail in CI
    vault          pytest plugin: real OpenBao and a PostgreSQL of our own
"""
