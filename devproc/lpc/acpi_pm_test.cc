#include "devproc/lpc/acpi_pm.h"

#include <cstdint>
#include <optional>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace hv::lpc {
namespace {

using Block = AcpiPm::Block;
using State = AcpiPm::State;

constexpr int64_t kSec = 1000000000;
// Time for bit 23 of the timer to toggle: 2^23 ticks at 3.579545 MHz.
constexpr int64_t kToggleNs = 2343484438;  // ceil(2^23 * 1e9 / 3579545)

class AcpiPmTest : public ::testing::Test {
 protected:
  uint16_t Sts() { return static_cast<uint16_t>(pm_.Read(Block::kPm1aEvt, 0, 2)); }
  uint16_t En() { return static_cast<uint16_t>(pm_.Read(Block::kPm1aEvt, 2, 2)); }
  uint16_t Cnt() { return static_cast<uint16_t>(pm_.Read(Block::kPm1aCnt, 0, 2)); }
  void WriteSts(uint16_t v) { pm_.Write(Block::kPm1aEvt, 0, 2, v); }
  void WriteEn(uint16_t v) { pm_.Write(Block::kPm1aEvt, 2, 2, v); }
  void WriteCnt(uint16_t v) { pm_.Write(Block::kPm1aCnt, 0, 2, v); }
  uint32_t Timer() { return pm_.Read(Block::kPmTmr, 0, 4); }

  int64_t monotonic_ = 0;
  std::vector<bool> sci_;
  std::vector<uint8_t> sleeps_;
  int resets_ = 0;
  AcpiPm pm_{[this] { return monotonic_; }, [this](bool level) { sci_.push_back(level); },
             [this](uint8_t typ) { sleeps_.push_back(typ); }, [this] { ++resets_; }};
};

TEST_F(AcpiPmTest, PowerOnState) {
  EXPECT_EQ(Sts(), 0);
  EXPECT_EQ(En(), 0);
  EXPECT_EQ(Cnt(), AcpiPm::kSciEn) << "always in ACPI mode";
  EXPECT_EQ(pm_.Read(Block::kReset, 0, 1), 0);
  EXPECT_FALSE(pm_.NextEventNs().has_value());
  EXPECT_FALSE(pm_.SciAsserted());
}

TEST_F(AcpiPmTest, SlpEnWithS5CallsOnSleep) {
  WriteCnt(AcpiPm::kSlpTypS5 << AcpiPm::kSlpTypShift);
  EXPECT_TRUE(sleeps_.empty()) << "SLP_TYP alone does nothing";
  EXPECT_EQ(Cnt(), AcpiPm::kSciEn | (AcpiPm::kSlpTypS5 << AcpiPm::kSlpTypShift));
  WriteCnt(AcpiPm::kSlpEn | (AcpiPm::kSlpTypS5 << AcpiPm::kSlpTypShift) | AcpiPm::kSciEn);
  EXPECT_EQ(sleeps_, std::vector<uint8_t>{AcpiPm::kSlpTypS5});
  EXPECT_EQ(Cnt() & AcpiPm::kSlpEn, 0) << "SLP_EN is write-only";
  EXPECT_EQ(Sts() & AcpiPm::kWakSts, 0);
  // A byte write of the high half carries SLP_TYP and SLP_EN together.
  pm_.Write(Block::kPm1aCnt, 1, 1,
            (AcpiPm::kSlpEn | (AcpiPm::kSlpTypS5 << AcpiPm::kSlpTypShift)) >> 8);
  EXPECT_EQ(sleeps_.size(), 2u);
  pm_.Write(Block::kPm1aCnt, 1, 1, AcpiPm::kSlpEn >> 8);  // SLP_TYP = 0 now
  EXPECT_EQ(sleeps_.size(), 2u);
  EXPECT_EQ(Sts() & AcpiPm::kWakSts, AcpiPm::kWakSts);
}

TEST_F(AcpiPmTest, OtherSleepTypesDoNotCallOnSleepAndWakeAtOnce) {
  for (uint16_t typ = 0; typ < 8; ++typ) {
    if (typ == AcpiPm::kSlpTypS5) continue;
    WriteCnt(static_cast<uint16_t>(AcpiPm::kSlpEn | (typ << AcpiPm::kSlpTypShift)));
    EXPECT_TRUE(sleeps_.empty()) << typ;
    EXPECT_EQ(Sts() & AcpiPm::kWakSts, AcpiPm::kWakSts) << typ;
    WriteSts(AcpiPm::kWakSts);
    EXPECT_EQ(Sts() & AcpiPm::kWakSts, 0);
  }
  EXPECT_TRUE(sci_.empty()) << "WAK_STS does not raise the SCI";
}

TEST_F(AcpiPmTest, Pm1StsIsWriteOneToClear) {
  pm_.PressPowerButton();
  monotonic_ = kToggleNs;  // TMR_STS too
  EXPECT_EQ(Sts(), AcpiPm::kPwrBtnSts | AcpiPm::kTmrSts);
  WriteSts(0);
  EXPECT_EQ(Sts(), AcpiPm::kPwrBtnSts | AcpiPm::kTmrSts) << "writing 0 changes nothing";
  WriteSts(AcpiPm::kTmrSts);
  EXPECT_EQ(Sts(), AcpiPm::kPwrBtnSts);
  WriteSts(0xffff);
  EXPECT_EQ(Sts(), 0);
  WriteSts(0xffff);
  EXPECT_EQ(Sts(), 0) << "writing 1 does not set";
}

TEST_F(AcpiPmTest, EnableBitsReadBack) {
  WriteEn(0xffff);
  EXPECT_EQ(En(), AcpiPm::kTmrEn | AcpiPm::kGblEn | AcpiPm::kPwrBtnEn | AcpiPm::kSlpBtnEn |
                      AcpiPm::kRtcEn);
  WriteEn(0);
  EXPECT_EQ(En(), 0);
}

TEST_F(AcpiPmTest, SciFollowsStatusAndEnable) {
  pm_.PressPowerButton();
  EXPECT_FALSE(pm_.SciAsserted()) << "not enabled";
  WriteEn(AcpiPm::kPwrBtnEn);
  EXPECT_TRUE(pm_.SciAsserted());
  WriteEn(0);
  EXPECT_FALSE(pm_.SciAsserted());
  WriteEn(AcpiPm::kPwrBtnEn);
  EXPECT_TRUE(pm_.SciAsserted());
  WriteSts(AcpiPm::kPwrBtnSts);
  EXPECT_FALSE(pm_.SciAsserted());
  pm_.PressPowerButton();
  EXPECT_TRUE(pm_.SciAsserted());
  pm_.PressPowerButton();
  EXPECT_EQ(sci_, (std::vector<bool>{true, false, true, false, true})) << "only on change";
}

TEST_F(AcpiPmTest, TimerRunsAt3579545HzAndWrapsAt24Bits) {
  EXPECT_EQ(Timer(), 0u);
  monotonic_ = 1 * kSec;
  EXPECT_EQ(Timer(), 3579545u);
  monotonic_ = 2 * kSec;
  EXPECT_EQ(Timer(), 7159090u);
  monotonic_ = 1000;  // 1 us: 3.58 ticks
  EXPECT_EQ(Timer(), 3u);
  // 2^24 ticks take 4.686968875 s; the counter wraps to 0 there.
  const int64_t wrap_ns = 4686968875;  // ceil(2^24 * 1e9 / 3579545)
  monotonic_ = wrap_ns - 1;
  EXPECT_EQ(Timer(), 0xffffffu);
  monotonic_ = wrap_ns;
  EXPECT_EQ(Timer(), 0u);
  monotonic_ = wrap_ns + kSec;
  EXPECT_EQ(Timer(), 3579545u);
  // Far in the future the upper byte of the 32-bit register stays 0.
  monotonic_ = 400LL * 86400 * kSec;
  EXPECT_EQ(Timer() & 0xff000000u, 0u);
  EXPECT_EQ(Timer(), pm_.TimerValue());
  pm_.Write(Block::kPmTmr, 0, 4, 0x12345678);
  EXPECT_EQ(Timer(), pm_.TimerValue()) << "read-only";
}

TEST_F(AcpiPmTest, TimerStatusOnBit23ToggleWithDeadline) {
  EXPECT_FALSE(pm_.NextEventNs().has_value()) << "TMR_EN off";
  WriteEn(AcpiPm::kTmrEn);
  ASSERT_EQ(pm_.NextEventNs(), kToggleNs);
  monotonic_ = kToggleNs - 1;
  pm_.Advance();
  EXPECT_FALSE(pm_.SciAsserted());
  EXPECT_EQ(Timer(), 0x7fffffu);
  monotonic_ = kToggleNs;
  pm_.Advance();
  EXPECT_EQ(Timer(), 0x800000u);
  EXPECT_TRUE(pm_.SciAsserted());
  EXPECT_FALSE(pm_.NextEventNs().has_value()) << "no deadline while the SCI is up";
  WriteSts(AcpiPm::kTmrSts);
  EXPECT_FALSE(pm_.SciAsserted());
  ASSERT_EQ(pm_.NextEventNs(), 4686968875) << "bit 23 toggles back at the wrap";
  monotonic_ = 4686968875;
  pm_.Advance();
  EXPECT_TRUE(pm_.SciAsserted());
  EXPECT_EQ(Timer(), 0u);
}

TEST_F(AcpiPmTest, TimerStatusIsSetWithoutEnable) {
  monotonic_ = 3 * kSec;
  EXPECT_EQ(Sts(), AcpiPm::kTmrSts);
  EXPECT_TRUE(sci_.empty());
  WriteSts(AcpiPm::kTmrSts);
  EXPECT_EQ(Sts(), 0);
  // Enabling with a toggle already past raises the SCI at once.
  monotonic_ = 5 * kSec;
  WriteEn(AcpiPm::kTmrEn);
  EXPECT_TRUE(pm_.SciAsserted());
}

TEST_F(AcpiPmTest, CatchesUpAfterLongStallOnce) {
  WriteEn(AcpiPm::kTmrEn);
  monotonic_ = 3600 * kSec;
  pm_.Advance();
  EXPECT_EQ(sci_, std::vector<bool>{true});
  WriteSts(AcpiPm::kTmrSts);
  EXPECT_EQ(sci_, (std::vector<bool>{true, false}));
  const std::optional<int64_t> next = pm_.NextEventNs();
  ASSERT_TRUE(next.has_value());
  EXPECT_GT(*next, monotonic_);
  EXPECT_LE(*next - monotonic_, kToggleNs);
}

TEST_F(AcpiPmTest, ByteWordAndDwordAccessesAtAnyOffset) {
  pm_.PressPowerButton();                       // STS = 0x0100
  WriteEn(AcpiPm::kPwrBtnEn | AcpiPm::kTmrEn);  // EN = 0x0101
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 0, 4), 0x01010100u);
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 0, 1), 0x00u);
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 1, 1), 0x01u);
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 2, 1), 0x01u);
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 3, 1), 0x01u);
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 1, 2), 0x0101u);
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 3, 2), 0xff01u) << "past the block: 0xff";
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 2, 4), 0xffff0101u);
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 9, 1), 0xffu);

  // Byte writes touch only their byte.
  pm_.Write(Block::kPm1aEvt, 3, 1, 0x00);  // PWRBTN_EN off, TMR_EN stays
  EXPECT_EQ(En(), AcpiPm::kTmrEn);
  pm_.Write(Block::kPm1aEvt, 0, 1, 0xff);  // low status byte: PWRBTN_STS stays
  EXPECT_EQ(Sts(), AcpiPm::kPwrBtnSts);
  pm_.Write(Block::kPm1aEvt, 1, 1, 0x01);  // clears PWRBTN_STS
  EXPECT_EQ(Sts(), 0);
  pm_.PressPowerButton();
  pm_.Write(Block::kPm1aEvt, 1, 2, 0x0101);  // STS high byte and EN low byte
  EXPECT_EQ(Sts(), 0);
  EXPECT_EQ(En(), AcpiPm::kTmrEn);
  pm_.Write(Block::kPm1aEvt, 0, 4, 0x01000000);  // dword: EN = 0x0100, nothing cleared
  EXPECT_EQ(En(), AcpiPm::kPwrBtnEn);
  pm_.Write(Block::kPm1aEvt, 3, 4, 0xffffff00);  // only byte 3 is in the block
  EXPECT_EQ(En(), 0);

  // PM1_CNT: SCI_EN in byte 0, SLP_TYP/SLP_EN in byte 1.
  EXPECT_EQ(pm_.Read(Block::kPm1aCnt, 0, 1), 0x01u);
  EXPECT_EQ(pm_.Read(Block::kPm1aCnt, 1, 1), 0x00u);
  EXPECT_EQ(pm_.Read(Block::kPm1aCnt, 1, 2), 0xff00u);
  pm_.Write(Block::kPm1aCnt, 1, 1, 0x0c);  // SLP_TYP = 3
  EXPECT_EQ(Cnt(), 0x0c01);
  EXPECT_EQ(pm_.Read(Block::kPm1aCnt, 0, 4), 0xffff0c01u);

  // PM_TMR: every width sees one sample.
  monotonic_ = 1234567890;
  const uint32_t t = pm_.TimerValue();
  EXPECT_EQ(pm_.Read(Block::kPmTmr, 0, 1), t & 0xff);
  EXPECT_EQ(pm_.Read(Block::kPmTmr, 1, 1), (t >> 8) & 0xff);
  EXPECT_EQ(pm_.Read(Block::kPmTmr, 2, 1), (t >> 16) & 0xff);
  EXPECT_EQ(pm_.Read(Block::kPmTmr, 3, 1), 0u);
  EXPECT_EQ(pm_.Read(Block::kPmTmr, 1, 2), (t >> 8) & 0xffff);
  EXPECT_EQ(pm_.Read(Block::kPmTmr, 2, 4), 0xffff0000u | (t >> 16));

  // Bad sizes.
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 0, 0), 0xffffffffu);
  EXPECT_EQ(pm_.Read(Block::kPm1aEvt, 0, 8), 0xffffffffu);
  pm_.Write(Block::kPm1aEvt, 0, 8, 0xffffffff);
  EXPECT_EQ(En(), 0);
}

TEST_F(AcpiPmTest, ResetRegister) {
  pm_.Write(Block::kReset, 0, 1, 0x02);
  EXPECT_EQ(resets_, 0);
  EXPECT_EQ(pm_.Read(Block::kReset, 0, 1), 0x02u);
  pm_.Write(Block::kReset, 0, 1, 0x06);
  EXPECT_EQ(resets_, 1);
  pm_.Write(Block::kReset, 0, 1, 0x0e);
  EXPECT_EQ(resets_, 2);
  EXPECT_EQ(pm_.Read(Block::kReset, 0, 1), 0x0au) << "bit 2 self-clears";
  pm_.Write(Block::kReset, 0, 2, 0x0004);
  EXPECT_EQ(resets_, 3);
  pm_.Write(Block::kReset, 1, 1, 0x06);
  EXPECT_EQ(resets_, 3) << "outside the 1-byte block";
  EXPECT_EQ(pm_.Read(Block::kReset, 0, 2), 0xff00u);
}

TEST_F(AcpiPmTest, ResetRestoresPowerOnRegisters) {
  WriteEn(AcpiPm::kPwrBtnEn);
  pm_.PressPowerButton();
  WriteCnt(3 << AcpiPm::kSlpTypShift);
  pm_.Reset();
  EXPECT_FALSE(pm_.SciAsserted());
  EXPECT_EQ(Sts(), 0);
  EXPECT_EQ(En(), 0);
  EXPECT_EQ(Cnt(), AcpiPm::kSciEn);
}

TEST_F(AcpiPmTest, SaveRestoreContinuesInAnotherInstance) {
  WriteEn(AcpiPm::kPwrBtnEn | AcpiPm::kTmrEn);
  WriteCnt(2 << AcpiPm::kSlpTypShift);
  monotonic_ = 10 * kSec;
  pm_.Advance();
  const State saved = pm_.Save();
  ASSERT_TRUE(saved.sci_asserted);
  std::vector<bool> sci2;
  AcpiPm other([this] { return monotonic_; }, [&](bool l) { sci2.push_back(l); }, nullptr, nullptr);
  other.Restore(saved);
  EXPECT_EQ(other.Save(), saved);
  EXPECT_TRUE(sci2.empty());
  EXPECT_EQ(other.Read(Block::kPm1aEvt, 0, 4), pm_.Read(Block::kPm1aEvt, 0, 4));
  EXPECT_EQ(other.Read(Block::kPm1aCnt, 0, 2), Cnt());
  State flipped = saved;
  flipped.sci_asserted = false;
  other.Restore(flipped);
  EXPECT_EQ(sci2, std::vector<bool>{true});
}

::testing::AssertionResult Consistent(const AcpiPm& pm, const AcpiPm::ClockFn& mono) {
  const State s = pm.Save();
  if (s.pm1_sts & ~(AcpiPm::kTmrSts | AcpiPm::kPwrBtnSts | AcpiPm::kWakSts))
    return ::testing::AssertionFailure() << "sts " << s.pm1_sts;
  if (s.pm1_cnt & (AcpiPm::kSciEn | AcpiPm::kSlpEn | AcpiPm::kGblRls))
    return ::testing::AssertionFailure() << "cnt " << s.pm1_cnt;
  const bool level = (s.pm1_sts & s.pm1_en & (AcpiPm::kTmrSts | AcpiPm::kPwrBtnSts)) != 0;
  if (level != s.sci_asserted) return ::testing::AssertionFailure() << "SCI vs STS & EN";
  AcpiPm probe(mono, nullptr, nullptr, nullptr);
  probe.Restore(s);
  if (probe.Save() != s) return ::testing::AssertionFailure() << "Restore(Save()) differs";
  if ((probe.Read(Block::kPm1aCnt, 0, 1) & 1) != 1)
    return ::testing::AssertionFailure() << "SCI_EN";
  if (probe.Read(Block::kPmTmr, 0, 4) > AcpiPm::kTimerMask)
    return ::testing::AssertionFailure() << "timer width";
  return ::testing::AssertionSuccess();
}

TEST(AcpiPmFuzzTest, RandomAccessesKeepInvariants) {
  std::mt19937 rng(0xacb1);
  int64_t mono = 77 * kSec;
  AcpiPm::ClockFn mono_fn = [&] { return mono; };
  int sci_calls = 0, sleeps = 0, resets = 0;
  bool level = false, repeat = false;
  AcpiPm pm(
      mono_fn,
      [&](bool l) {
        ++sci_calls;
        if (l == level) repeat = true;
        level = l;
      },
      [&](uint8_t typ) {
        EXPECT_EQ(typ, AcpiPm::kSlpTypS5);
        ++sleeps;
      },
      [&] { ++resets; });
  std::optional<AcpiPm> shadow;
  uint32_t last_timer = pm.TimerValue();
  int64_t last_timer_ns = mono;
  for (int i = 0; i < 100000; ++i) {
    if (i % 5000 == 0) {
      shadow.emplace(mono_fn, nullptr, nullptr, nullptr);
      shadow->Restore(pm.Save());
    }
    const uint32_t r = rng();
    const Block block = static_cast<Block>((r >> 8) % 4);
    const uint32_t offset =
        (r >> 10) % 16 == 0 ? (r >> 14) % 8 : (r >> 14) % AcpiPm::BlockLength(block);
    static constexpr uint32_t kSizes[] = {1, 2, 4, 1, 2, 4, 3, 0};
    const uint32_t size = kSizes[(r >> 17) % 8];
    const uint32_t kind = r % 100;
    if (kind < 35) {
      uint32_t value = rng();
      if (block == Block::kPm1aEvt && rng() % 2) value &= 0xfffefeff;  // keep some status
      pm.Write(block, offset, size, value);
      shadow->Write(block, offset, size, value);
    } else if (kind < 75) {
      const uint32_t v = pm.Read(block, offset, size);
      ASSERT_EQ(v, shadow->Read(block, offset, size)) << "op " << i;
      if (size < 1 || size > 4) {
        ASSERT_EQ(v, 0xffffffffu);
      }
    } else if (kind < 95) {
      mono += (r >> 12) % 4 == 0 ? int64_t((r >> 14) % 5000) * 1000000 : (r >> 14) % 100000;
    } else if (kind < 98) {
      pm.PressPowerButton();
      shadow->PressPowerButton();
    } else if (kind < 99) {
      pm.Advance();
      shadow->Advance();
    } else {
      mono += int64_t((r >> 12) % 4000) * kSec;  // a stall
    }
    if (auto next = pm.NextEventNs(); next && *next <= mono) {
      pm.Advance();
      shadow->Advance();
      const std::optional<int64_t> after = pm.NextEventNs();
      ASSERT_TRUE(!after || *after > mono) << "op " << i;
    }
    // The timer is monotonic modulo 2^24.
    const uint32_t t = pm.TimerValue();
    const int64_t elapsed = mono - last_timer_ns;
    if (elapsed < 4 * kSec) {
      const uint32_t delta = (t - last_timer) & AcpiPm::kTimerMask;
      const double expect = elapsed * 3.579545e-3;
      ASSERT_NEAR(delta, expect, 1.0) << "op " << i;
    }
    last_timer = t;
    last_timer_ns = mono;
    ASSERT_FALSE(repeat) << "op " << i;
    ASSERT_EQ(level, pm.SciAsserted()) << "op " << i;
    ASSERT_TRUE(Consistent(pm, mono_fn)) << "op " << i;
    ASSERT_EQ(shadow->Save(), pm.Save()) << "op " << i;
  }
  EXPECT_GT(sci_calls, 1000);
  EXPECT_GT(sleeps, 10);
  EXPECT_GT(resets, 100);
}

}  // namespace
}  // namespace hv::lpc
