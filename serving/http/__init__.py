"""One request pipeline for every HTTP route Tonle serves.

Each route is a :func:`~serving.http.pipeline.endpoint`: authenticate
(:mod:`serving.http.identify`: JWT, API key, signed link, the operators' metrics token
or the loopback-only dev caller) -> tenant scope (the
:class:`~serving.http.caller.Caller`'s tenant comes from configuration only) -> strict
parse (:mod:`serving.body`) -> handle -> audit row committed
(:mod:`serving.http.audit`) -> respond. Refused callers get one 401 body (403
/ 410 for a bad signed link) and no durable row (they are counted,
:mod:`serving.metrics`); a store that cannot be reached is answered 503, decided in one
place (:func:`serving.http.identify.refusal`). Every route that answers a caller is
built this way: CDS Hooks, its discovery and feedback, REST, the imaging and PACS study
routes, the pages opened by signed link and the explanation page's feedback, and the
operators' ``/metrics``, ``/readyz/detail`` and ``/ui/monitor``; the route table test
(``tests/serving/http/test_route_table.py``) lists, with reasons, the few that need no
caller (static pages, documentation) and fails for any other route that is not.
"""
