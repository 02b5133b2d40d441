"""The redactor's lifetimes: request-scoped secrets, a replaced (not accumulated) set, scrubbed output documents.

A request's secrets (a ``/probe`` target's password) mask what that request logs and answers and are gone when
it ends; the process-wide set is whatever the configuration holds now, so its cost does not grow with history.
"""

from __future__ import annotations

import asyncio
import json

from comfywatch import redact
from comfywatch.redact import MASK, SecretRegistry

PASSWORD = "req-scoped-pa55word"


class TestRequestScope:
    def test_registrations_in_a_scope_mask_inside_and_vanish_after(self) -> None:
        """Inside the scope the secret is masked; afterwards the registry is as before and the secret unknown."""
        registry = SecretRegistry()
        registry.register("config-secret-value")
        before = len(registry)
        with registry.request_scope():
            registry.register(PASSWORD)
            assert registry.scrub(f"x {PASSWORD} config-secret-value") == f"x {MASK} {MASK}"
        assert len(registry) == before
        assert PASSWORD not in registry
        assert registry.scrub(PASSWORD) == PASSWORD

    def test_many_scopes_leave_the_registry_unchanged(self) -> None:
        """A thousand requests with fresh secrets cost the process-wide registry nothing."""
        registry = SecretRegistry()
        registry.register("config-secret-value")
        before = len(registry)
        for number in range(1000):
            with registry.request_scope():
                registry.register(f"fresh-password-{number}")
        assert len(registry) == before

    def test_nested_scope_sees_the_outer_one(self) -> None:
        """A scope inside a scope masks both requests' secrets; leaving it restores the outer scope."""
        registry = SecretRegistry()
        with registry.request_scope():
            registry.register("outer-secret-1")
            with registry.request_scope():
                registry.register("inner-secret-2")
                assert registry.scrub("outer-secret-1 inner-secret-2") == f"{MASK} {MASK}"
            assert registry.scrub("outer-secret-1 inner-secret-2") == f"{MASK} inner-secret-2"

    async def test_tasks_started_in_a_scope_share_it_and_other_requests_do_not(self) -> None:
        """A task the request starts masks the request's secret; a concurrent request does not see it."""
        registry = SecretRegistry()
        in_request = asyncio.Event()
        leave = asyncio.Event()

        async def scrub_in_a_task() -> str:
            return registry.scrub(PASSWORD)

        async def request() -> str:
            with registry.request_scope():
                registry.register(PASSWORD)
                in_request.set()
                child = asyncio.create_task(scrub_in_a_task())
                await leave.wait()
                return await child

        async def other_request() -> str:
            await in_request.wait()
            with registry.request_scope():
                seen = registry.scrub(PASSWORD)
            leave.set()
            return seen

        inside, other = await asyncio.gather(request(), other_request())
        assert inside == MASK
        assert other == PASSWORD

    def test_module_level_scope_uses_the_process_registry(self) -> None:
        """``register_secret`` inside ``request_scope()`` masks through ``scrub`` and leaves SECRETS unchanged."""
        before = len(redact.SECRETS)
        with redact.request_scope():
            redact.register_secret(PASSWORD)
            assert redact.scrub(PASSWORD) == MASK
        assert len(redact.SECRETS) == before
        assert PASSWORD not in redact.SECRETS


class TestReplace:
    def test_replace_drops_what_the_new_set_does_not_hold(self) -> None:
        """A reload's set replaces the old one: old passwords are forgotten, new ones masked, size bounded."""
        registry = SecretRegistry()
        for generation in range(50):
            registry.replace([f"password-of-generation-{generation}", "shared-api-key-77"])
        latest_only = SecretRegistry()
        latest_only.replace(["password-of-generation-49", "shared-api-key-77"])
        assert len(registry) == len(latest_only)
        assert registry.scrub("password-of-generation-48") == "password-of-generation-48"
        assert registry.scrub("password-of-generation-49 shared-api-key-77") == f"{MASK} {MASK}"

    def test_replace_with_nothing_forgets_everything(self) -> None:
        """An empty set leaves only the shape rules."""
        registry = SecretRegistry()
        registry.register("forget-this-one")
        registry.replace([])
        assert len(registry) == 0
        assert registry.scrub("forget-this-one") == "forget-this-one"


class TestScrubOutput:
    def test_deep_structure_is_scrubbed_and_keeps_its_shape(self) -> None:
        """Strings at any depth (keys included) are scrubbed; numbers, booleans and None are kept as they are."""
        registry = SecretRegistry()
        registry.register("pässwört-42")
        document = {
            "ok": False,
            "seconds": 1.5,
            "count": 3,
            "none": None,
            "detail": "server said pässwört-42",
            "problems": ["node 4: pässwört-42", ("tuple", "http://u:x@h/")],
            "pässwört-42": {"nested": ["pässwört-42"]},
        }
        scrubbed = registry.scrub_output(document)
        assert scrubbed == {
            "ok": False,
            "seconds": 1.5,
            "count": 3,
            "none": None,
            "detail": f"server said {MASK}",
            "problems": [f"node 4: {MASK}", ["tuple", f"http://{MASK}@h/"]],
            MASK: {"nested": [MASK]},
        }
        # Scrubbing before serialising: the escaped form json.dumps would write is never produced.
        assert "p\\u00e4ssw" not in json.dumps(scrubbed)

    def test_text_is_scrubbed_like_scrub(self) -> None:
        """A plain string comes back as scrub() would return it, so one call fits text and documents."""
        registry = SecretRegistry()
        registry.register("text-secret-99")
        assert registry.scrub_output("a text-secret-99 b") == f"a {MASK} b"

    def test_module_level_scrub_output_uses_the_process_registry(self) -> None:
        """``redact.scrub_output`` masks what ``register_secret`` registered."""
        redact.register_secret("module-output-secret-31")
        assert redact.scrub_output({"x": ["module-output-secret-31"]}) == {"x": [MASK]}
