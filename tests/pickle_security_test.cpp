// The restricted unpickler must never run code: checkpoints whose pickles
// reference anything outside the allow-list (posix.system, builtins.eval,
// subprocess.Popen, a whole nn.Module, ...) are refused with the global's name,
// and the payload (which would create a marker file) never runs. Also: opcode
// edge cases, hostile lengths, cycles, deep nesting and random mutations of a
// real torch.save pickle are errors, never crashes. References: tests/ref/import_ref.py.
#include <nlohmann/json.hpp>
#include <random>

#include "test_util.h"
#include "vitkit/core/error.h"
#include "vitkit/core/file.h"
#include "vitkit/io/model_io.h"
#include "vitkit/io/pth.h"
#include "vitkit/io/unpickler.h"

namespace vitkit {
namespace {

std::string imp(const std::string& f) { return test::ref_path("import/" + f); }

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << "message: " << (msg)

// Literals may hold NUL bytes: take their full length.
Pickle parse(const std::string& bytes) {
  return unpickle(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.pkl");
}
template <size_t N>
Pickle parse(const char (&b)[N]) {
  return parse(std::string(b, N - 1));
}
template <size_t N>
std::string parse_error(const char (&b)[N]) {
  return error_of([&] { parse(b); });
}

TEST(PickleSecurity, MaliciousCheckpointsAreRefused) {
  VITKIT_REQUIRE_FILE(imp("malicious.json"));
  auto cases = nlohmann::json::parse(read_text_file(imp("malicious.json")));
  ASSERT_GE(cases.size(), 10u);
  for (auto& c : cases) {
    const std::string path = imp(c["file"].get<std::string>()), expect = c["expect"];
    const std::string marker = c["marker"];
    SCOPED_TRACE(path);
    std::string msg = error_of([&] { PthReader r(path); });
    EXPECT_ERROR_HAS(msg, "refusing to load");
    EXPECT_ERROR_HAS(msg, expect);
    EXPECT_ERROR_HAS(msg, path);
    LoadOptions o;
    o.config = "heads=4";
    msg = error_of([&] { load_model(path, o); });
    EXPECT_ERROR_HAS(msg, expect);
    auto r = test::run_cli("info " + path + " --config heads=4");
    EXPECT_EQ(r.code, 1);
    EXPECT_NE(r.err.find(expect), std::string::npos) << r.err;
    EXPECT_FALSE(file_exists(marker)) << "the payload ran: " << marker;
  }
}

TEST(PickleSecurity, WholeModuleGetsAStateDictHint) {
  VITKIT_REQUIRE_FILE(imp("malicious/whole_module.pth"));
  std::string msg = error_of([] { PthReader r(imp("malicious/whole_module.pth")); });
  EXPECT_ERROR_HAS(msg, "VisionTransformer");
  EXPECT_ERROR_HAS(msg, "state_dict()");
}

// A global is refused where it is named, before any REDUCE could use it.
TEST(PickleSecurity, GlobalsAreRefusedWhereNamed) {
  EXPECT_ERROR_HAS(parse_error("\x80\x02" "cos\nsystem\n."), "os.system");
  EXPECT_ERROR_HAS(parse_error("\x80\x02" "cbuiltins\ngetattr\n."), "builtins.getattr");
  EXPECT_ERROR_HAS(parse_error("\x80\x02" "ctorch._utils\n_rebuild_tensor\n."), "torch._utils._rebuild_tensor");
  EXPECT_ERROR_HAS(parse_error("\x80\x02" "ctorch\nComplexFloatStorage\n."), "storage type");
  // STACK_GLOBAL names from the memo; non-string names.
  EXPECT_ERROR_HAS(parse_error("\x80\x04\x8c\x02os\x94\x8c\x06system\x94h\x00h\x01\x93."), "os.system");
  EXPECT_ERROR_HAS(parse_error("\x80\x04K\x01K\x02\x93."), "STACK_GLOBAL needs two strings");
  // INST and OBJ build objects by name; EXT codes name globals indirectly.
  EXPECT_ERROR_HAS(parse_error("(ios\nsystem\n."), "os.system");
  EXPECT_ERROR_HAS(parse_error("(ccollections\nOrderedDict\no."), "OBJ");
  EXPECT_ERROR_HAS(parse_error("\x80\x02\x82\x01."), "extension");
  // Control characters in a refused name are escaped in the message.
  EXPECT_ERROR_HAS(parse_error("\x80\x02" "cevil\x1b[31m\nx\n."), "evil\\x1b[31m.x");
}

// The allowed globals cannot be turned into anything else.
TEST(PickleSecurity, AllowedGlobalsOnlyBuildValues) {
  EXPECT_ERROR_HAS(parse_error("\x80\x02" "ccollections\nOrderedDict\nK\x01\x85R."), "OrderedDict called with");
  EXPECT_ERROR_HAS(parse_error("\x80\x02" "ctorch\nFloatStorage\n)R."), "persistent id");
  EXPECT_ERROR_HAS(parse_error("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n)\x81."), "NEWOBJ");
  EXPECT_ERROR_HAS(parse_error("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\n)R."), "6 or 7 arguments");
  EXPECT_ERROR_HAS(parse_error("\x80\x02]K\x01\x85R."), "not a callable");
  EXPECT_ERROR_HAS(parse_error("\x80\x02]}b."), "BUILD on a list");
  // A persistent id must be exactly a storage tuple.
  EXPECT_ERROR_HAS(parse_error("\x80\x02X\x03\x00\x00\x00" "abcQ."), "persistent id");
  EXPECT_ERROR_HAS(parse_error("\x80\x02(X\x07\x00\x00\x00storageK\x01X\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x01tQ."),
                   "storage type");
  EXPECT_ERROR_HAS(parse_error("P0\n."), "PERSID");
  // An OrderedDict with a _metadata state (as state dicts have) is fine.
  Pickle p = parse("\x80\x02" "ccollections\nOrderedDict\nq\x00)Rq\x01}X\x01\x00\x00\x00" "aK\x05sb.");
  EXPECT_EQ(p.at(p.root).kind, PyKind::Dict);
}

TEST(PickleSecurity, PlainDataOpcodes) {
  Pickle p = parse("\x80\x02}q\x00(X\x01\x00\x00\x00" "aJ\xff\xff\xff\xffX\x01\x00\x00\x00" "bG?\xf8\x00\x00\x00\x00\x00\x00"
                   "U\x01" "c\x8a\x02\x00\x80U\x01" "d\x88U\x01" "e\x8a\x09\x01\x00\x00\x00\x00\x00\x00\x00\x00u.");
  const PyObject& d = p.at(p.root);
  ASSERT_EQ(d.kind, PyKind::Dict);
  ASSERT_EQ(d.items.size(), 10u);
  EXPECT_EQ(p.at(d.items[1]).i, -1);
  EXPECT_EQ(p.at(d.items[3]).f, 1.5);
  EXPECT_EQ(p.at(d.items[5]).i, -32768);
  EXPECT_EQ(p.at(d.items[7]).kind, PyKind::Bool);
  EXPECT_EQ(p.at(d.items[9]).i, 1);
  // Protocol 0 text forms.
  Pickle t = parse("(I42\nL-7L\nF2.5\nS'it\\'s'\nVcaf\\u00e9\nI01\ntp0\n.");
  const PyObject& tu = t.at(t.root);
  ASSERT_EQ(tu.items.size(), 6u);
  EXPECT_EQ(t.at(tu.items[0]).i, 42);
  EXPECT_EQ(t.at(tu.items[1]).i, -7);
  EXPECT_EQ(t.at(tu.items[2]).f, 2.5);
  EXPECT_EQ(t.at(tu.items[3]).s, "it's");
  EXPECT_EQ(t.at(tu.items[4]).s, "caf\xc3\xa9");
  EXPECT_EQ(t.at(tu.items[5]).kind, PyKind::Bool);
  // Sets, frozensets, bytes, memo by MEMOIZE.
  Pickle s = parse("\x80\x04\x8f\x94(K\x01K\x02\x90(C\x02hi\x91h\x00\x86.");
  EXPECT_EQ(s.at(s.root).items.size(), 2u);
  EXPECT_ERROR_HAS(parse_error("\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x00."), "does not fit");
}

TEST(PickleSecurity, HostileStreamsAreErrors) {
  EXPECT_ERROR_HAS(parse_error(""), "truncated");
  EXPECT_ERROR_HAS(parse_error("\x80"), "truncated");
  EXPECT_ERROR_HAS(parse_error("\x80\x06."), "protocol 6");
  EXPECT_ERROR_HAS(parse_error("\x80\x02R."), "stack underflow");
  EXPECT_ERROR_HAS(parse_error("\x80\x02."), "stack underflow");
  EXPECT_ERROR_HAS(parse_error("\x80\x02(."), "stack underflow");
  EXPECT_ERROR_HAS(parse_error("\x80\x02t."), "no MARK");
  EXPECT_ERROR_HAS(parse_error("\x80\x02h\x05."), "memo entry 5");
  EXPECT_ERROR_HAS(parse_error("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x7f."), "truncated");
  EXPECT_ERROR_HAS(parse_error("\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\xff."), "frame");
  EXPECT_ERROR_HAS(parse_error("\x80\x02\x8b\xff\xff\xff\x7f."), "truncated");
  EXPECT_ERROR_HAS(parse_error("\x80\x02T\xff\xff\xff\xff."), "negative length");
  EXPECT_ERROR_HAS(parse_error("\x80\x02}K\x01s."), "stack underflow");
  EXPECT_ERROR_HAS(parse_error("\x80\x02}(K\x01u."), "odd number");
  EXPECT_ERROR_HAS(parse_error("\x80\x02K\x01K\x02" "a."), "APPEND on a int");
  EXPECT_ERROR_HAS(parse_error("Ifoo\n."), "bad integer");
  EXPECT_ERROR_HAS(parse_error("\x80\x02\xff."), "opcode 0xff");
  EXPECT_ERROR_HAS(parse_error("\x80\x05\x97."), "out-of-band");
}

// A list holding itself, and 200000 nested lists: no recursion, no leak.
TEST(PickleSecurity, CyclesAndDeepNesting) {
  Pickle c = parse("\x80\x02]q\x00h\x00" "a.");
  EXPECT_EQ(c.at(c.root).items[0], c.root);
  const int n = 200000;
  std::string deep = "\x80\x02";
  for (int i = 0; i < n; ++i) deep += "]";
  for (int i = 0; i < n - 1; ++i) deep += "a";
  deep += ".";
  Pickle d = parse(deep);
  EXPECT_EQ(d.at(d.root).kind, PyKind::List);
}

// Random byte mutations and every truncation of a real torch.save pickle:
// each parses or fails with a vitkit::Error, never anything else.
TEST(PickleSecurity, MutatedTorchPicklesNeverCrash) {
  VITKIT_REQUIRE_FILE(imp("tv_sd.data.pkl"));
  std::vector<uint8_t> good = read_file(imp("tv_sd.data.pkl"));
  Pickle p = unpickle(good.data(), good.size(), "tv_sd");
  EXPECT_GE(p.tensors.size(), 20u);
  std::mt19937 rng(1234);
  int errors = 0;
  for (int it = 0; it < 3000; ++it) {
    std::vector<uint8_t> b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<uint8_t>(rng());
    try {
      unpickle(b.data(), b.size(), "mutant");
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 0);
  for (size_t n = 0; n < good.size(); ++n)
    EXPECT_THROW(unpickle(good.data(), n, "cut"), Error) << n;
}

}  // namespace
}  // namespace vitkit
