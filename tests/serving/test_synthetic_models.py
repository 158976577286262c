"""Models trained on synthetic data: every output says so; production refuses them."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from models.ncd_predictor import NcdPredictor
from models.registry import ArtifactError
from serving.assess import NoAdvice, Problem, assess
from serving.cards import ncd_card
from serving.config import ServingConfig
from serving.fhir_out import device, risk_assessment
from serving.imaging.card import cxr_card
from serving.no_advice_card import no_advice_card
from serving.runtime import Runtime
from serving.synthetic import DEMO_NOTE, check_servable, trained_on_synthetic
from serving.ui.explanations import ModelView
from serving.ui.links import LinkSigner
from tests.ncd_fixtures import synthetic as flag_synthetic
from tests.serving.cds_fixtures import runtime_for, shared_store
from tests.serving.imaging.results_fixtures import make_result

EN = "Demo model: synthetic training data, not for clinical use."
KM = "ម៉ូដែលសាកល្បង៖ ទិន្នន័យបណ្តុះបណ្តាលសិប្បនិម្មិត"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with runtime_for(shared_store(), tmp_path_factory.mktemp("rt")) as rt:
        yield rt


def _flagged(predictor: NcdPredictor, value: bool) -> NcdPredictor:
    copied = copy.copy(predictor)
    copied.metadata = flag_synthetic(copied.metadata, value)
    return copied


@pytest.mark.parametrize(
    ("value", "dev", "allowed", "refused"),
    [
        (True, False, False, True),
        (True, True, False, False),
        (True, False, True, False),
        (False, False, False, False),
    ],
)
def test_production_refuses_synthetic_models(
    runtime: Runtime, value: bool, dev: bool, allowed: bool, refused: bool
) -> None:
    meta = _flagged(runtime.ncd["ncd-cvd-risk"], value).metadata
    if refused:
        with pytest.raises(ArtifactError, match="allow_synthetic_models"):
            check_servable(meta, dev=dev, allow_synthetic=allowed)
    else:
        check_servable(meta, dev=dev, allow_synthetic=allowed)


def test_only_the_demo_config_allows_synthetic_models() -> None:
    from training.demo import _serving_config

    assert ServingConfig().allow_synthetic_models is False
    assert ServingConfig.model_validate(_serving_config({}))  # still a valid config
    assert _serving_config({})["allow_synthetic_models"] is True


@pytest.mark.parametrize(("lang", "said"), [("en", EN), ("km", KM)])
def test_every_ncd_output_says_demo(runtime: Runtime, lang: str, said: str) -> None:
    predictor = _flagged(runtime.ncd["ncd-cvd-risk"], True)
    values: dict[str, float | str] = {
        "sex": "male", "age": 60.0, "smoking": 1.0, "sbp": 150.0, "total_chol": 5.5,
        "bmi": 27.0, "diabetes": 0.0,
    }  # fmt: skip
    advice = assess(predictor, values)
    card = ncd_card(
        advice, lang=lang, indicators=runtime.config.indicators, patient_id="p1",
        encounter_id=None, explain_url="https://example.org/x", region="",
    )  # fmt: skip
    assert card.detail is not None
    assert card.detail.startswith(f"**{said}")
    assert said.rstrip(".").lower()[:20] in card.source.label.lower()
    resource = risk_assessment(advice, resource_id="r1", patient_id="p1")
    assert resource["note"][0]["text"] == DEMO_NOTE
    assert device(predictor.metadata)["note"][0]["text"] == DEMO_NOTE
    assert ModelView.from_metadata(predictor.metadata).synthetic
    no = no_advice_card(
        NoAdvice.of([Problem("insufficient-data", "sbp")]), predictor.metadata,
        lang=lang, max_age_days=365,
    )  # fmt: skip
    assert no.detail is not None
    assert no.detail.startswith(f"**{said}")


def test_real_model_outputs_say_nothing_of_demo(runtime: Runtime) -> None:
    predictor = runtime.ncd["ncd-cvd-risk"]
    assert not trained_on_synthetic(predictor.metadata)
    assert DEMO_NOTE not in str(device(predictor.metadata))
    assert not ModelView.from_metadata(predictor.metadata).synthetic


def test_cxr_card_says_demo() -> None:
    signer = LinkSigner(b"k" * 32, timedelta(days=1))
    demo = cxr_card(make_result(), public_url="https://x", signer=signer, demo=True)
    real = cxr_card(make_result(), public_url="https://x", signer=signer)
    assert demo.detail is not None
    assert demo.detail.startswith(f"**{EN}**")
    assert "demo model" in demo.source.label
    assert EN not in (real.detail or "")


def test_training_records_synthetic_ncd_data(tmp_path: Path) -> None:
    from training.ncd_table import load_table
    from training.synthetic_ncd import INDEX_DATE, generate

    folder = generate(tmp_path / "ndjson", 300, 0)
    table = load_table(folder, INDEX_DATE.isoformat())
    assert table.attrs["synthetic_training_data"] is True
    csv = tmp_path / "table.csv"
    table.to_csv(csv, index=False)
    assert load_table(csv).attrs["synthetic_training_data"] is False


@pytest.mark.parametrize(("dev", "allowed"), [(False, False), (True, False), (False, True)])
def test_runtime_refuses_to_load_a_synthetic_model_in_production(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dev: bool, allowed: bool
) -> None:
    """``tonle serve`` without --dev would serve the synthetic-trained demo models."""
    import dataclasses

    from models import registry
    from serving.settings import Settings
    from tests.serving.cds_fixtures import model_store_at, write_config

    verify = registry.verify

    def synthetic(name: str, version: str) -> registry.StoredModel:
        stored = verify(name, version)
        return dataclasses.replace(stored, metadata=flag_synthetic(stored.metadata))

    monkeypatch.setattr(registry, "verify", synthetic)
    settings = Settings(
        serving_config=write_config(tmp_path, allow_synthetic_models=allowed),
        database_url=f"sqlite:///{tmp_path / 'audit.db'}",
        dev=dev,
        public_url="http://127.0.0.1:3000",
        link_secret="synthetic-model-test-link-key-".ljust(40, "k"),
    )
    with model_store_at(shared_store()):
        if dev or allowed:
            try:
                loaded = Runtime.load(settings)
            except ArtifactError as exc:  # pragma: no cover - the failure being tested
                pytest.fail(f"refused: {exc}")
            except Exception:  # past the model check (e.g. production auth not configured)
                return
            if loaded.audit is not None:
                loaded.audit.close()
        else:
            with pytest.raises(ArtifactError, match="trained on synthetic data"):
                Runtime.load(settings)


def test_rest_answer_says_demo(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import httpx

    from serving.app import create_app

    app = create_app(runtime.settings)
    app.state.runtime = runtime
    body = {"sex": "male", "age": 62, "smoking": True, "sbp": 165, "total_chol": 6.2,
            "diabetes": False, "bmi": 27.5}  # fmt: skip

    async def post(payload: dict[str, object]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.post("/v1/risk/cvd", json=payload)

    real = asyncio.run(post(body)).json()
    assert not real["advisory"].startswith(DEMO_NOTE)
    predictor = runtime.ncd["ncd-cvd-risk"]
    monkeypatch.setattr(predictor, "metadata", _flagged(predictor, True).metadata)
    demo = asyncio.run(post(body)).json()
    assert demo["advisory"].startswith(DEMO_NOTE)
    assert demo["risk_assessment"]["note"][0]["text"] == DEMO_NOTE
    refused = asyncio.run(post({**body, "sbp": 400})).json()
    assert refused["advisory"].startswith(DEMO_NOTE)


def test_model_card_page_says_demo(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model card page of a synthetic-trained model carries the demo banner too
    (cards, REST, FHIR and the explanation pages already did)."""
    import asyncio
    import dataclasses

    import httpx

    from serving.app import create_app

    app = create_app(runtime.settings)
    app.state.runtime = runtime

    async def page() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return (await c.get("/ui/models/cvd-risk/1.0.0")).text

    key = next(k for k, s in runtime.models.items() if s.metadata.name == "cvd-risk")
    stored = runtime.models[key]
    assert 'id="demo-model"' not in asyncio.run(page())
    demo = dataclasses.replace(stored, metadata=flag_synthetic(stored.metadata))
    monkeypatch.setitem(runtime.models, key, demo)
    shown = asyncio.run(page())
    assert 'id="demo-model"' in shown
    assert EN in shown
