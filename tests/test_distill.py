import dataclasses
import json

import pytest

from tr1_agent.configs import DatasetConfig, DistillConfig
from tr1_agent.datasets import build_prompts, load
from tr1_agent.distill import accepts, distill, evidence, parse_action, template_thesis
from tr1_env.context.record import MODALITIES
from tr1_env.core.actions import Action
from tr1_env.scoring.rewards import evidence_reward, score
from tr1_env.scoring.thesis import count_words, parse_thesis


@pytest.fixture(scope="module")
def rows(store):
    return build_prompts(DatasetConfig(tickers=("AAPL", "NVDA"), max_days=2, variants=2, max_chars=2500), store)


@pytest.mark.parametrize("text,action", [
    ("[[[BUY]]] because revenue grew", Action.BUY),
    ("I recommend a strong buy here.", Action.STRONG_BUY),
    ("Strong-Sell. Momentum is fading", Action.STRONG_SELL),
    ("hold, then maybe buy later", Action.HOLD),
    ("The outlook is unclear.", None),
])
def test_teacher_answers_are_read_leniently(text, action):
    assert parse_action(text) == action


def test_acceptance_modes():
    assert accepts("exact", Action.BUY, Action.BUY) and not accepts("exact", Action.STRONG_BUY, Action.BUY)
    assert accepts("direction", Action.STRONG_BUY, Action.BUY) and not accepts("direction", Action.HOLD, Action.BUY)
    assert accepts("any", None, Action.SELL) and not accepts("direction", None, Action.SELL)


def test_evidence_is_verbatim_and_quote_sized(rows):
    """Each piece of evidence, cited in a bullet, parses back as exactly one quote (itself) and one
    source, and the reward finds it in the context."""
    opinion = " ".join(["growth"] * 20)
    n = 0
    for row in rows:
        for modality in row["modalities"]:
            for e in evidence(modality, row["context"]):
                parsed = parse_thesis(f"<news>\n- {opinion} *{e.quote}* `{e.source}`\n</news>")
                ((bullet,),) = (s.bullets for s in parsed.sections)
                assert bullet.quotes == (e.quote,) and bullet.sources == (e.source,) and bullet.opinion == opinion
                checked = evidence_reward(parsed, row["context"])
                assert (checked.n_quotes, checked.n_verified, checked.n_fabricated) == (1, 1, 0)
                n += 1
    assert n > 20


def test_stitched_theses_score_in_the_rewards_format(rows):
    """Code-stitched theses (template opinions, no API) parse into 5-7 cited sections with no fabricated quote."""
    full = [r for r in rows if len(set(r["modalities"]) - set(r["missing"])) >= 3]
    assert full
    for row in full:
        thesis = template_thesis(row)
        parsed = parse_thesis(thesis)
        r = score(thesis, Action[row["label"]], row["context"])
        assert parsed.decision == Action[row["label"]] and parsed.think
        assert parsed.sections[-1].tag == "conclusion" and parsed.sections[-1].has_table
        assert r.n_fabricated == 0 and r.n_quotes >= 4 * len(parsed.sections) - 4
        assert r.structure > 0.7 and r.evidence > 0.9 and r.decision == 1.0
        for section in parsed.sections:
            assert section.header and section.has_bold
            assert all(15 <= count_words(b.opinion) <= 90 for b in section.bullets)


@pytest.mark.slow
def test_distill_against_a_real_openai_compatible_server(katan, store, tmp_path):
    """Teacher, planner and writer are SmolLM2 behind llm-katan; a rerun makes no HTTP call."""
    # 1,500 characters keep all five modalities (asserted) in a ~700-token prompt: SmolLM2 reading it on one CPU
    # thread is most of each of the seven calls, and what is checked here is the calls, their cache and the filter
    rows = build_prompts(DatasetConfig(tickers=("MSFT",), max_days=1, variants=1, max_chars=1500,
                                       modality_prob=1.0), store)
    assert set(rows[0]["modalities"]) == set(MODALITIES)
    cfg = DistillConfig(output_dir=str(tmp_path / "out"), teacher_model=katan.model, planner_model=katan.model,
                        writer_model=katan.model, base_url=katan.base_url, accept="any", cache_dir=str(tmp_path),
                        teacher_max_tokens=16, planner_max_tokens=32, writer_max_tokens=40, max_sections=5,
                        bullets=4, min_structure=0.8, min_evidence=0.8)
    served = katan.completed_requests()
    sft, report = distill(rows, cfg)
    calls = katan.completed_requests() - served
    assert report["kept"] == len(sft) == 1 and report["status"] == {"kept": 1}
    assert calls == report["http_requests"] == 1 + 1 + 5  # teacher, planner, one writer call per analysis section
    usage = report["usage"]
    assert usage["teacher"]["new_calls"] == 1 and usage["writer"]["new_calls"] == 5
    assert usage["teacher"]["prompt_tokens"] > 100 and usage["writer"]["completion_tokens"] > 0
    assert usage["total_cost_usd"] == pytest.approx(usage["new_cost_usd"]) and usage["total_cost_usd"] > 0
    label = rows[0]["label"]
    assert report["by_label"][label]["acceptance_rate"] == 1.0 and report["by_label"][label]["keep_rate"] == 1.0

    thesis = sft[0]["completion"][0]["content"]
    r = score(thesis, Action[label], rows[0]["context"])
    assert r.n_fabricated == 0 and r.decision == 1.0 and r.structure >= 0.8
    assert load(tmp_path / "out" / "sft").to_list() == sft.to_list()
    assert load(tmp_path / "out" / "sft.jsonl").to_list() == sft.to_list()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["kept"] == 1

    # A rerun (after a crash, or on purpose) answers every call from the on-disk cache.
    again, rerun = distill(rows, cfg)
    assert katan.completed_requests() - served == calls and rerun["http_requests"] == 0
    assert rerun["usage"]["new_cost_usd"] == 0 and rerun["usage"]["total_cost_usd"] == usage["total_cost_usd"]
    assert again.to_list() == sft.to_list()

    # Rejection sampling: relabel the day so the teacher's answer cannot match it.
    teacher = sft[0]["teacher_action"]
    impossible = Action.STRONG_SELL if teacher is None or Action[teacher].direction >= 0 else Action.STRONG_BUY
    relabelled = rows.map(lambda r: {"label": impossible.name})
    strict = dataclasses.replace(cfg, accept="direction", output_dir=str(tmp_path / "strict"))
    rejected, report = distill(relabelled, strict)
    assert len(rejected) == 0 and report["kept"] == 0 and report["http_requests"] == 0  # the teacher is cached
    assert report["status"] == {"teacher_mismatch" if teacher else "teacher_unparsed": 1}
    assert report["by_label"][impossible.name]["acceptance_rate"] == 0.0
