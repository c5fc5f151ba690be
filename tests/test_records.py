"""Prompt CSV / metadata JSONL parsing: repeated ids are never resolved silently."""

from __future__ import annotations

import json

import pytest

from sparkle_video import SkipReport, SparkleDataError
from sparkle_video.data.records import SampleEntry, join_bench, join_train, read_jsonl

CSV_PATH, JSONL_PATH = "prompts/location_train.csv", "prompts/location_train_metadata.jsonl"


def sid(n: int) -> str:
    return f"Sparkle_location_{n:06d}"


def csv_text(ids: list[str]) -> str:
    lines = ["prompt,src_video,tgt_video,task"]
    lines += [f"prompt of {i},location/source_video/{i}.mp4,location/edited_video/{i}.mp4,{i}" for i in ids]
    return "\n".join(lines) + "\n"


def meta_line(i: str, scene: str = "rooftop") -> str:
    return json.dumps(
        {"id": i, "prompt": f"prompt of {i}", "metadata": {"chosen_keyword": f"urban: {scene}"}}
    )


def test_csv_repeating_an_id_raises() -> None:
    ids = [sid(0), sid(1), sid(0)]
    meta = "\n".join(meta_line(i) for i in (sid(0), sid(1))) + "\n"
    with pytest.raises(SparkleDataError, match="row 4 repeats id") as e:
        join_train("location", csv_text(ids), CSV_PATH, meta, JSONL_PATH)
    assert sid(0) in str(e.value) and CSV_PATH in str(e.value)
    report = SkipReport()
    entries = join_train("location", csv_text(ids), CSV_PATH, meta, JSONL_PATH, errors="skip", report=report)
    assert [x.id for x in entries] == [sid(0), sid(1)] and report.ids == [sid(0)]


def test_jsonl_repeating_an_id_with_different_content_raises() -> None:
    meta = "\n".join([meta_line(sid(0)), meta_line(sid(1)), meta_line(sid(0), scene="harbour")]) + "\n"
    with pytest.raises(SparkleDataError, match="lines 1 and 3") as e:
        join_train("location", csv_text([sid(0), sid(1)]), CSV_PATH, meta, JSONL_PATH)
    assert sid(0) in str(e.value) and JSONL_PATH in str(e.value)
    report = SkipReport()
    entries = join_train(
        "location", csv_text([sid(0), sid(1)]), CSV_PATH, meta, JSONL_PATH, errors="skip", report=report
    )
    assert [x.id for x in entries] == [sid(1)]
    assert report.ids == [sid(0)]  # reported once, not again as "missing from the metadata"


def test_jsonl_line_repeated_verbatim_is_accepted() -> None:
    meta = "\n".join([meta_line(sid(0)), meta_line(sid(0))]) + "\n"
    records = read_jsonl(meta, JSONL_PATH)
    assert list(records) == [sid(0)]
    entries = join_train("location", csv_text([sid(0)]), CSV_PATH, meta, JSONL_PATH)
    assert entries[0].scene == "rooftop"


def test_bench_jsonl_duplicates_are_reported() -> None:
    i = "Sparkle_style_010000"
    csv = f"edited_type,prompt,original_video\nstyle,p,source_videos/style/{i}.mp4\n"
    meta = "\n".join(
        json.dumps({"id": i, "metadata": {"chosen_keyword": f"art: {s}"}}) for s in ("village", "alley")
    )
    with pytest.raises(SparkleDataError, match="repeated with different content"):
        join_bench("style", csv, "style_bench.csv", meta, "style_metadata.jsonl")
    report = SkipReport()
    assert (
        join_bench(
            "style", csv, "style_bench.csv", meta, "style_metadata.jsonl", errors="skip", report=report
        )
        == []
    )
    assert report.ids == [i]


# -- field by field: what each CSV/JSONL column becomes -------------------------------------------
def test_train_join_fills_every_field() -> None:
    csv = (
        "prompt,src_video,tgt_video,task\n"
        f"row prompt, location\\source_video\\{sid(0)}.mp4 ,./location/edited_video/{sid(0)}.mp4, {sid(0)} \n"
        f",location/source_video/{sid(1)}.mp4,location/edited_video/{sid(1)}.mp4,{sid(1)}\n"
        f",location/source_video/{sid(2)}.mp4,location/edited_video/{sid(2)}.mp4,{sid(2)}\n"
    )
    meta = "\n".join(
        [
            json.dumps(
                {
                    "id": sid(0),
                    "prompt": "jsonl prompt",
                    "metadata": {
                        "chosen_keyword": "urban: rooftop overlooking skyline",
                        "original_scene": "a kitchen",
                        "edit_type": "location_change",
                    },
                }
            ),
            "",  # blank lines are allowed
            json.dumps({"id": sid(1), "prompt": "jsonl prompt 1", "metadata": None}),
            json.dumps({"id": sid(2)}),
        ]
    )
    e0, e1, e2 = join_train("location", csv, CSV_PATH, meta, JSONL_PATH)
    assert e0 == SampleEntry(
        id=sid(0),
        theme="location",
        prompt="row prompt",  # the CSV's prompt wins over the JSONL's
        subtheme="urban",
        scene="rooftop overlooking skyline",
        original_scene="a kitchen",
        edit_type="location_change",
        source_path=f"location/source_video/{sid(0)}.mp4",
        edited_path=f"location/edited_video/{sid(0)}.mp4",
        ref_image_path=None,
    )
    assert e0.text_fields() == {
        "id": sid(0),
        "theme": "location",
        "prompt": "row prompt",
        "subtheme": "urban",
        "scene": "rooftop overlooking skyline",
        "original_scene": "a kitchen",
    }
    assert (e1.prompt, e1.subtheme, e1.scene, e1.original_scene, e1.edit_type) == (
        "jsonl prompt 1",  # an empty CSV prompt falls back to the JSONL's
        None,
        None,
        None,
        "location",  # no edit_type anywhere: the theme
    )
    assert e2.prompt == ""


def test_train_join_without_metadata_uses_the_csv_alone() -> None:
    (entry,) = join_train("openve3m", csv_text([sid(0)]), CSV_PATH, None, JSONL_PATH)
    assert (entry.id, entry.prompt, entry.subtheme, entry.edit_type) == (
        sid(0),
        f"prompt of {sid(0)}",
        None,
        "openve3m",
    )


def test_bench_join_fills_every_field() -> None:
    i, j = "Sparkle_style_010000", "Sparkle_style_010001"
    csv = (
        "edited_type,prompt,original_video\n"
        f"style_csv,p0, source_videos/style/{i}.mp4 \n"
        f",p1,source_videos/style/{j}.mp4\n"
    )
    meta = "\n".join(
        [
            json.dumps(
                {"id": i, "metadata": {"chosen_keyword": "art: watercolour village", "edit_type": "x"}}
            ),
            json.dumps({"id": j, "metadata": {"edit_type": "style_meta", "original_scene": "a park"}}),
        ]
    )
    refs = [f"ref_images/style/{i}.png", "ref_images/style/other.png"]
    e0, e1 = join_bench("style", csv, "style_bench.csv", meta, "style_metadata.jsonl", ref_images=refs)
    assert e0 == SampleEntry(
        id=i,
        theme="style",
        prompt="p0",
        subtheme="art",
        scene="watercolour village",
        original_scene=None,
        edit_type="style_csv",  # the CSV's edited_type wins
        source_path=f"source_videos/style/{i}.mp4",
        edited_path=None,
        ref_image_path=f"ref_images/style/{i}.png",
    )
    assert (e1.id, e1.edit_type, e1.original_scene, e1.ref_image_path) == (j, "style_meta", "a park", None)


def test_jsonl_problems_name_the_line_and_are_skipped_one_by_one() -> None:
    text = "\n".join(
        [
            json.dumps({"id": sid(0)}),
            "{broken",
            "[1, 2]",  # not an object
            json.dumps({"prompt": "no id"}),
            json.dumps({"id": 7}),  # id not a string
            json.dumps({"id": sid(1)}),
        ]
    )
    with pytest.raises(SparkleDataError, match="broken JSONL line 2 ") as e:
        read_jsonl(text, JSONL_PATH)
    assert e.value.path == JSONL_PATH
    with pytest.raises(SparkleDataError, match="broken JSONL line 2 "):  # "raise" is the default
        read_jsonl(text, JSONL_PATH, report=SkipReport())
    report = SkipReport()
    assert list(read_jsonl(text, JSONL_PATH, errors="skip", report=report)) == [sid(0), sid(1)]
    assert report.ids == [f"{JSONL_PATH}:{n}" for n in (2, 3, 4, 5)]
    assert "string 'id'" in report.skipped[1][1]
    with pytest.raises(SparkleDataError):  # skipping needs a report to record what was skipped
        read_jsonl(text, JSONL_PATH, errors="skip")


def test_an_id_on_three_differing_lines_is_left_out_once() -> None:
    lines = [meta_line(sid(0)), meta_line(sid(0), "harbour"), meta_line(sid(1)), meta_line(sid(0), "alley")]
    text = "\n".join(lines)
    with pytest.raises(SparkleDataError) as e:
        read_jsonl(text, JSONL_PATH)
    assert str(e.value) == (
        f"id repeated with different content on JSONL lines 1 and 2 | file: {JSONL_PATH} | id: {sid(0)}"
    )
    report, conflicts = SkipReport(), set()
    records = read_jsonl(text, JSONL_PATH, errors="skip", report=report, conflicts=conflicts)
    assert list(records) == [sid(1)] and records[sid(1)] == json.loads(lines[2])
    assert conflicts == {sid(0)} and report.ids == [sid(0)]


def test_conflicting_ids_drop_their_rows_but_no_others() -> None:
    meta = "\n".join([meta_line(sid(0)), meta_line(sid(0), "harbour"), meta_line(sid(1))])
    report = SkipReport()
    entries = join_train(
        "location",
        csv_text([sid(0), sid(1), sid(0)]),
        CSV_PATH,
        meta,
        JSONL_PATH,
        errors="skip",
        report=report,
    )
    assert [x.id for x in entries] == [sid(1)]
    assert report.ids == [sid(0), sid(0)]  # the conflict, then the CSV's repeated row
    assert "row 4 repeats id" in report.skipped[1][1]
    with pytest.raises(SparkleDataError, match="repeated with different content"):  # "raise" by default
        join_train("location", csv_text([sid(0)]), CSV_PATH, meta, JSONL_PATH, report=SkipReport())


def test_row_problems_name_row_file_and_id() -> None:
    csv = (
        "prompt,src_video,tgt_video,task\n"
        f"p,location/source_video/{sid(0)}.mp4,location/edited_video/{sid(0)}.mp4,  \n"
        f"p,../x.mp4,location/edited_video/{sid(1)}.mp4,{sid(1)}\n"
        f"p,location/source_video/{sid(2)}.mp4,/abs/{sid(2)}.mp4,{sid(2)}\n"
        f"p,location/source_video/{sid(3)}.mp4,location/edited_video/{sid(3)}.mp4,{sid(3)}\n"
        f"p,location/source_video/{sid(4)}.mp4,location/edited_video/{sid(4)}.mp4,{sid(4)}\n"
    )
    meta = "\n".join(meta_line(i) for i in (sid(1), sid(2), sid(4), sid(5), sid(6)))
    with pytest.raises(SparkleDataError) as e:
        join_train("location", csv, CSV_PATH, meta, JSONL_PATH)
    assert str(e.value) == f"row 2 has an empty 'task' | file: {CSV_PATH}"
    report = SkipReport()
    entries = join_train("location", csv, CSV_PATH, meta, JSONL_PATH, errors="skip", report=report)
    assert [x.id for x in entries] == [sid(4)]
    assert report.ids == [f"{CSV_PATH}:2", sid(1), sid(2), sid(3), sid(5), sid(6)]
    reasons = dict(report.skipped)
    assert reasons[sid(1)] == "row 3: '..' not allowed in path: '../x.mp4'"
    assert reasons[sid(2)].startswith("row 4: absolute path not allowed")
    assert reasons[sid(3)] == "id in location_train.csv but not in the metadata JSONL"
    assert reasons[sid(5)] == "id in the metadata JSONL but not in the CSV"
    for row_csv, message in [
        (
            csv_text([sid(0)]).replace(f"location/source_video/{sid(0)}", "../up"),
            r"row 2: '\.\.' not allowed",
        ),
        (csv_text([sid(3)]), "but not in the metadata JSONL"),
    ]:
        with pytest.raises(SparkleDataError, match=message) as e:
            join_train("location", row_csv, CSV_PATH, meta, JSONL_PATH, errors="raise", report=SkipReport())
        assert e.value.sample_id in (sid(0), sid(3))
        assert e.value.path == (CSV_PATH if "row 2" in message else JSONL_PATH)
    with pytest.raises(SparkleDataError) as e:
        join_train(
            "location", csv_text([sid(1)]), CSV_PATH, meta, JSONL_PATH, errors="raise", report=SkipReport()
        )
    assert str(e.value) == f"id in the metadata JSONL but not in the CSV | file: {CSV_PATH} | id: {sid(2)}"
    with pytest.raises(SparkleDataError) as e:
        join_train("location", csv.replace("../x.mp4", "x.mp4"), CSV_PATH, meta, JSONL_PATH, errors="skip")
    assert str(e.value).startswith("row 2 has an empty 'task'")  # skipping needs a report
    bad_target = csv_text([sid(1)]).replace(f"location/edited_video/{sid(1)}.mp4", "C:/x.mp4")
    with pytest.raises(SparkleDataError) as e:
        join_train("location", bad_target, CSV_PATH, meta, JSONL_PATH)
    assert (e.value.path, e.value.sample_id) == (CSV_PATH, sid(1)) and "absolute path not allowed" in str(
        e.value
    )


def test_rows_without_a_task_are_named_by_row() -> None:
    csv = f"prompt,src_video,tgt_video,task\np,a.mp4,b.mp4,\np,c.mp4,d.mp4\np,e.mp4,f.mp4,{sid(0)}\n"
    report = SkipReport()
    entries = join_train("location", csv, CSV_PATH, None, JSONL_PATH, errors="skip", report=report)
    assert [x.id for x in entries] == [sid(0)]
    assert report.ids == [f"{CSV_PATH}:2", f"{CSV_PATH}:3"]  # an empty field and a missing one


def test_bad_chosen_keyword_names_the_jsonl_and_id() -> None:
    meta = json.dumps({"id": sid(0), "metadata": {"chosen_keyword": "no separator"}})
    with pytest.raises(SparkleDataError, match="must look like 'subtheme: scene'") as e:
        join_train("location", csv_text([sid(0)]), CSV_PATH, meta, JSONL_PATH)
    assert (e.value.path, e.value.sample_id) == (JSONL_PATH, sid(0))


def test_bench_row_problems_name_row_file_and_id() -> None:
    bench_csv, bench_jsonl = "style_bench.csv", "style_metadata.jsonl"
    i, j, k = (f"Sparkle_style_01000{n}" for n in range(3))
    for video in ("  ", ""):
        with pytest.raises(SparkleDataError) as e:
            join_bench(
                "style", f"edited_type,prompt,original_video\nstyle,p,{video}\n", bench_csv, None, bench_jsonl
            )
        assert str(e.value) == f"row 2: empty path '' | file: {bench_csv}"
    rows = [
        f"style,p,source_videos/style/{i}.mp4",
        f"style,p,/abs/{j}.mp4",
        f"style,p,source_videos/style/{i}.mp4",
    ]
    rows.append(f"style,p,source_videos/style/{k}.mp4")
    csv = "edited_type,prompt,original_video\n" + "\n".join(rows) + "\n"
    meta = "\n".join([json.dumps({"id": i}), json.dumps({"id": j}), "{broken"])
    with pytest.raises(SparkleDataError) as e:
        join_bench("style", csv, bench_csv, meta, bench_jsonl, report=SkipReport())  # "raise" by default
    assert str(e.value).startswith("broken JSONL line 3 (") and e.value.path == bench_jsonl
    meta = "\n".join(
        [json.dumps({"id": i}), json.dumps({"id": j}), json.dumps({"id": "Sparkle_style_010009"})]
    )
    with pytest.raises(SparkleDataError) as e:
        join_bench("style", csv, bench_csv, meta, bench_jsonl, errors="raise", report=SkipReport())
    assert str(e.value) == f"row 3: absolute path not allowed: '/abs/{j}.mp4' | file: {bench_csv} | id: {j}"
    report = SkipReport()
    entries = join_bench("style", csv, bench_csv, meta, bench_jsonl, errors="skip", report=report)
    assert [x.id for x in entries] == [i]
    assert report.skipped == [
        (j, f"row 3: absolute path not allowed: '/abs/{j}.mp4'"),
        (i, "row 4 repeats id"),
        (k, "id in style_bench.csv but not in the metadata JSONL"),
        ("Sparkle_style_010009", "id in the metadata JSONL but not in the CSV"),
    ]
    only_k = "edited_type,prompt,original_video\n" + rows[3] + "\n"
    with pytest.raises(SparkleDataError) as e:
        join_bench(
            "style", only_k, bench_csv, json.dumps({"id": k}) + "\n" + json.dumps({"id": i}), bench_jsonl
        )
    assert (e.value.path, e.value.sample_id) == (bench_csv, i)
    with pytest.raises(SparkleDataError) as e:
        join_bench("style", only_k, bench_csv, json.dumps({"id": i}), bench_jsonl)
    assert (e.value.path, e.value.sample_id) == (bench_jsonl, k)
    with pytest.raises(SparkleDataError) as e:
        join_bench("style", "prompt\np\n", bench_csv, None, bench_jsonl)
    assert e.value.path == bench_csv and "lacks columns" in str(e.value)


def test_stage_score_reads_a_field_or_the_mean_over_frames() -> None:
    from sparkle_video.data.records import stage_score

    assert stage_score({"editscore": {"overall": 7}}, "overall") == 7.0
    assert stage_score({"editscore": {"overall": "7"}}, "overall") is None
    assert stage_score({"editscore": [{"O_score": 6}, {"O_score": 8.5}, "junk", {}]}, "O_score") == 7.25
    assert stage_score({"editscore": [{"O_score": None}, "junk"]}, "O_score") is None
    assert stage_score({"editscore": 5}, "overall") is None and stage_score({}, "overall") is None
