"""The one owner of run and step state: every write of a Run, Step or Event row is here.

- ``sql``: the database that holds agentflow's tables, and every transaction on it.
- ``outbox``: events, numbered in the run's sequence and published once committed.
- ``run_rows``: the engine's transitions of a run (create, lease, park, wake, pause,
  join, finish).
- ``run_actions``: what operators and the API do (resume, cancel, signal, retry, fork,
  prune).
- ``step_rows``: a run's top-level steps, written only while the writer holds the lease.
- ``child_rows``: fan-out children (record, claim, finish, defer, reset, release).

Each transition is a named function that says what it guarantees; the rest of agentflow
calls these and writes none of these tables itself (``tests/test_project.py`` checks it).
The status sets and the step-kind and event-type enums are on the models
(``Run.ACTIVE``, ``Step.OPEN``, ``Step.Kind``, ``Event.Type``) so migrations see them too.
"""
