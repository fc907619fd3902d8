import pytest

from local_aws.template import Resolver, UnresolvableReference

TEMPLATE = {"Parameters": {"Stage": {"Type": "String", "Default": "dev"}}, "Resources": {}}


@pytest.fixture
def resolver():
    r = Resolver(TEMPLATE, region="eu-west-1", stack_name="Demo")
    r.define("Fn", "demo-fn", Arn="arn:aws:lambda:eu-west-1:123456789012:function:demo-fn")
    r.define("Bucket", "demo-bucket", Arn="arn:aws:s3:::demo-bucket")
    return r


def test_refs_getatts_and_pseudo_parameters(resolver):
    assert resolver.resolve({"Ref": "Fn"}) == "demo-fn"
    assert resolver.resolve({"Fn::GetAtt": ["Fn", "Arn"]}).endswith(":function:demo-fn")
    assert resolver.resolve({"Fn::GetAtt": "Bucket.Arn"}) == "arn:aws:s3:::demo-bucket"
    assert resolver.resolve({"Ref": "AWS::Region"}) == "eu-west-1"
    assert resolver.resolve({"Ref": "Stage"}) == "dev"


def test_join_sub_select_split_nest_inside_structures(resolver):
    value = {
        "Definition": {"Fn::Join": ["", ['{"Resource":"', {"Fn::GetAtt": ["Fn", "Arn"]}, '"}']]},
        "Sub": {"Fn::Sub": ["s3://${B}/${Bucket.Arn}", {"B": {"Ref": "Bucket"}}]},
        "Pick": {"Fn::Select": [1, {"Fn::Split": [",", "a,b,c"]}]},
        "List": [{"Ref": "AWS::Partition"}, 3, True],
    }
    resolved = resolver.resolve(value)
    assert resolved["Definition"] == '{"Resource":"arn:aws:lambda:eu-west-1:123456789012:function:demo-fn"}'
    assert resolved["Sub"] == "s3://demo-bucket/arn:aws:s3:::demo-bucket"
    assert resolved["Pick"] == "b"
    assert resolved["List"] == ["aws", 3, True]


def test_sub_with_only_a_string(resolver):
    assert resolver.resolve({"Fn::Sub": "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}/r"}) == (
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/r"
    )


def test_unknown_references_are_named(resolver):
    with pytest.raises(UnresolvableReference, match="Missing.Arn"):
        resolver.resolve({"Fn::GetAtt": ["Missing", "Arn"]})
