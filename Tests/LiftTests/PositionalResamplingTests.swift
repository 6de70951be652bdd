import Foundation
import XCTest
@testable import Lift

/// Positional-embedding resampling against PyTorch: the expected values are
/// torch.nn.functional.interpolate(grid, size=(n, n), mode="bicubic", antialias=True,
/// align_corners=False) in float64 (torch 2.13), i.e. timm's resample_abs_pos_embed, for
/// grid[y, x, c] = sin(1.3 y + 0.7 x + 0.9 c) + 0.1 y x with two channels.
final class PositionalResamplingTests: XCTestCase {
  static let torchResults: [(Int, Int, [Double])] = [
    (3, 5, [-0.1247505, 0.7612023, 0.1513553, 0.8856802, 0.6166645, 1.0494094, 0.9045132, 0.9126509, 1.0423463, 0.8029961, 0.3234952, 0.8463902, 0.5145515, 0.8511099, 0.8155685, 0.8132282, 0.8934218, 0.5528481, 0.9105944, 0.3842025, 0.9601062, 0.8439113, 0.9967018, 0.6699591, 1.0092974, 0.3392493, 0.7633841, -0.0594779, 0.5985559, -0.2864276, 0.7398009, 0.0874138, 0.6233074, -0.0773858, 0.3977879, -0.3465994, 0.1073397, -0.4691159, -0.0597447, -0.5196129, 0.5203587, -0.4149109, 0.3198840, -0.5531208, -0.0307301, -0.7478645, -0.3136030, -0.6709891, -0.4612955, -0.5975602]),
    (5, 3, [0.6266017, 0.8376525, 0.8202410, 0.2987857, 0.1759032, -0.4950241, 0.2741675, -0.3756493, -0.1562162, -0.3220590, 0.0352999, 0.5388584, -0.6891484, -0.2481880, 0.5378535, 1.2257116, 1.9788324, 2.1445009]),
    (4, 7, [-0.1313060, 0.7598625, 0.1172733, 0.8717732, 0.5717023, 1.0467056, 0.8631425, 0.9938722, 1.0222209, 0.7889025, 0.9692619, 0.3806439, 0.9213603, 0.1517800, 0.2698175, 0.8349123, 0.4494099, 0.8507084, 0.7657464, 0.8501842, 0.9009710, 0.6853049, 0.9058987, 0.4227512, 0.7227629, 0.0478075, 0.6104998, -0.1551801, 0.9266662, 0.8780965, 0.9738346, 0.7316619, 1.0291746, 0.4382852, 0.8898666, 0.1045319, 0.6369197, -0.2240679, 0.2566431, -0.4976892, 0.0492687, -0.6325801, 0.8971970, 0.3100191, 0.8089590, 0.1334779, 0.6223177, -0.1918655, 0.3571982, -0.4192848, 0.0720820, -0.5492474, -0.1912137, -0.5010057, -0.3242430, -0.4592509, 0.4843990, -0.3937980, 0.3196679, -0.5042987, 0.0114977, -0.6826714, -0.2312127, -0.6714328, -0.3918460, -0.5115278, -0.3853863, -0.1200114, -0.3662706, 0.1024897, -0.3281831, -0.8709510, -0.3995030, -0.7751170, -0.5069351, -0.5604144, -0.4559977, -0.2108067, -0.2740031, 0.2327698, 0.1209519, 0.8076868, 0.3431906, 1.1140040, -0.7856884, -1.0999485, -0.7940336, -0.8848663, -0.7697539, -0.4448136, -0.5430286, 0.0891443, -0.1642946, 0.6794864, 0.4426869, 1.3356788, 0.7748305, 1.6770575]),
  ]

  func testMatchesTorchBicubicAntialiasedUpAndDown() {
    for (from, to, expected) in Self.torchResults {
      var grid: [Float] = []
      for y in 0..<from { for x in 0..<from { for c in 0..<2 {
        grid.append(Float(sin(1.3 * Double(y) + 0.7 * Double(x) + 0.9 * Double(c)) + 0.1 * Double(y * x)))
      } } }
      let out = PositionalResampling.resample(grid, from: from, to: to, width: 2)
      XCTAssertEqual(out.count, expected.count)
      for (i, (a, b)) in zip(out, expected).enumerated() {
        XCTAssertEqual(Double(a), b, accuracy: 2e-6, "\(from) -> \(to), element \(i)")
      }
    }
  }

  func testSameSizeIsIdentityAndWeightsSumToOne() {
    let grid: [Float] = (0..<18).map { Float($0) * 0.5 }
    XCTAssertEqual(PositionalResampling.resample(grid, from: 3, to: 3, width: 2), grid)
    for (i, o) in [(14, 37), (37, 14), (16, 14)] {
      let taps = PositionalResampling.Taps(inSize: i, outSize: o)
      for w in taps.weights { XCTAssertEqual(w.reduce(0, +), 1, accuracy: 1e-12) }
    }
  }
}
