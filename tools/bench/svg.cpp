// SVG rendering by hand: rectangles, lines and text, nothing else.
#include "svg.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

namespace ringpager::bench {
namespace {

constexpr HandlerKind kHandlerOrder[] = {HandlerKind::lazy, HandlerKind::prefetch, HandlerKind::baseline,
                                         HandlerKind::baseline_eager, HandlerKind::replay, HandlerKind::prefetch_pause,
                                         HandlerKind::prefetch_steps};
constexpr double kBarWidth = 14, kGroupGap = 26, kLeft = 70, kRight = 20, kPanelHeight = 260;
constexpr double kPanelTop = 40, kLabelSpace = 44, kLegendHeight = 70;
constexpr double kValuePad = 44;  // room inside a panel, past the axis ends, for bar value labels
constexpr double kMaxLog2 = 8;  // ratios beyond 256x either way are clipped

const char* color(HandlerKind kind) {
    switch (kind) {
        case HandlerKind::lazy: return "#4e79a7";
        case HandlerKind::prefetch: return "#59a14f";
        case HandlerKind::baseline: return "#9c9c9c";
        case HandlerKind::baseline_eager: return "#e15759";
        case HandlerKind::replay: return "#f28e2b";
        case HandlerKind::prefetch_pause: return "#76b7b2";
        case HandlerKind::prefetch_steps: return "#b07aa1";
    }
    return "#000";
}

struct Bar {
    HandlerKind handler;
    double ratio;  // NaN: no value
};

struct BarGroup {
    std::string line1, line2;  // workload; "10 VM x 2 vCPU"
    std::string reference;     // handler the group is normalized to
    std::vector<Bar> bars;
};

using FigureOf = Figure (*)(const ScenarioResult&);

Figure time_figure(const ScenarioResult& r) { return r.spec.workload == Workload::none ? Figure::resident : Figure::done; }
Figure p99_figure(const ScenarioResult&) { return Figure::p99; }

// Normalizes each group to baseline, or baseline-eager when baseline has no value.
std::vector<BarGroup> bar_groups(const std::vector<ScenarioResult>& results, FigureOf figure_of) {
    std::vector<BarGroup> groups;
    for (const auto& members : group_results(results)) {
        std::map<HandlerKind, double> value;
        for (const ScenarioResult* r : members) value[r->spec.handler] = r->ok() ? r->figure(figure_of(*r)) : NAN;
        BarGroup g;
        const ScenarioSpec& spec = members.front()->spec;
        g.line1 = workload_name(spec.workload);
        g.line2 = std::to_string(spec.vms) + " VM x " + std::to_string(spec.vcpus) + " vCPU";
        double reference = NAN;
        for (HandlerKind candidate : {HandlerKind::baseline, HandlerKind::baseline_eager}) {
            auto it = value.find(candidate);
            if (it != value.end() && !std::isnan(it->second) && it->second > 0) {
                reference = it->second;
                g.reference = handler_name(candidate);
                break;
            }
        }
        for (HandlerKind kind : kHandlerOrder) {
            auto it = value.find(kind);
            if (it != value.end()) g.bars.push_back({kind, it->second / reference});
        }
        groups.push_back(std::move(g));
    }
    return groups;
}

std::string escape(const std::string& text) {
    std::string out;
    for (char c : text) {
        if (c == '&') out += "&amp;";
        else if (c == '<') out += "&lt;";
        else if (c == '>') out += "&gt;";
        else out += c;
    }
    return out;
}

std::string fmt(double v) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f", v);
    return text;
}

// One panel: log2 ratio axis, a line at 1 (the reference), bars from it.
void draw_panel(std::ostringstream& svg, const std::vector<BarGroup>& groups, const std::string& title, double top,
                double width) {
    double lo = 0, hi = 0;
    for (const BarGroup& g : groups)
        for (const Bar& b : g.bars)
            if (!std::isnan(b.ratio) && b.ratio > 0) {
                lo = std::min(lo, std::log2(b.ratio));
                hi = std::max(hi, std::log2(b.ratio));
            }
    lo = std::max(-kMaxLog2, std::floor(lo));
    hi = std::min(kMaxLog2, std::ceil(hi));
    if (hi - lo < 2) hi = lo + 2;
    auto y = [&](double l) {
        return top + kValuePad + (hi - std::clamp(l, lo, hi)) / (hi - lo) * (kPanelHeight - 2 * kValuePad);
    };
    svg << "<text x=\"" << kLeft << "\" y=\"" << top - 12 << "\" class=\"title\">" << escape(title) << "</text>\n";
    for (double l = lo; l <= hi; l += 1) {
        const double ratio = std::exp2(l);
        char label[32];
        std::snprintf(label, sizeof label, ratio >= 1 ? "x%.0f" : "x1/%.0f", ratio >= 1 ? ratio : 1 / ratio);
        svg << "<line x1=\"" << kLeft << "\" x2=\"" << width - kRight << "\" y1=\"" << fmt(y(l)) << "\" y2=\""
            << fmt(y(l)) << "\" class=\"" << (l == 0 ? "one" : "grid") << "\"/>\n"
            << "<text x=\"" << kLeft - 6 << "\" y=\"" << fmt(y(l) + 3) << "\" class=\"axis\">" << label << "</text>\n";
    }
    double x = kLeft + kGroupGap / 2;
    for (const BarGroup& g : groups) {
        const double group_width = kBarWidth * static_cast<double>(g.bars.size());
        for (const Bar& b : g.bars) {
            const bool valid = !std::isnan(b.ratio) && b.ratio > 0;
            const double l = valid ? std::log2(b.ratio) : 0;
            const double y0 = y(0), y1 = y(l);
            if (valid) {
                svg << "<rect x=\"" << fmt(x + 1) << "\" y=\"" << fmt(std::min(y0, y1)) << "\" width=\"" << kBarWidth - 2
                    << "\" height=\"" << fmt(std::max(1.0, std::abs(y1 - y0))) << "\" fill=\"" << color(b.handler)
                    << "\"><title>" << handler_name(b.handler) << ": " << format_ratio(b.ratio) << "</title></rect>\n";
            }
            // The value, written along the bar's direction, just past its end.
            const double ty = valid ? (l >= 0 ? y1 - 3 : y1 + 3) : y0 - 3;
            svg << "<text transform=\"translate(" << fmt(x + kBarWidth / 2 + 3) << "," << fmt(ty) << ") rotate(-90)\" "
                << "class=\"value\" text-anchor=\"" << (valid && l < 0 ? "end" : "start") << "\">"
                << (valid ? format_ratio(b.ratio) : "n/a") << "</text>\n";
            x += kBarWidth;
        }
        const double cx = x - group_width / 2;
        const double base = top + kPanelHeight;
        svg << "<text x=\"" << fmt(cx) << "\" y=\"" << fmt(base + 14) << "\" class=\"group\">" << escape(g.line1)
            << "</text>\n<text x=\"" << fmt(cx) << "\" y=\"" << fmt(base + 26) << "\" class=\"group\">"
            << escape(g.line2) << "</text>\n<text x=\"" << fmt(cx) << "\" y=\"" << fmt(base + 38)
            << "\" class=\"ref\">" << (g.reference.empty() ? "no reference" : "/ " + escape(g.reference))
            << "</text>\n";
        x += kGroupGap;
    }
}

void draw_legend(std::ostringstream& svg, const std::vector<ScenarioResult>& results, const RunInfo& info) {
    char heading[256];
    std::snprintf(heading, sizeof heading, "rp-bench: %llu MiB snapshot, kernel %s, %u CPUs",
                  static_cast<unsigned long long>(info.image_bytes >> 20), info.kernel.c_str(), info.cpus);
    svg << "<text x=\"" << kLeft << "\" y=\"20\" class=\"heading\">" << escape(heading) << "</text>\n"
        << "<text x=\"" << kLeft << "\" y=\"36\" class=\"legend\">Relative to baseline in the same run; log scale, "
           "below x1 is better; clipped at x1/256 and x256.</text>\n";
    double x = kLeft;
    for (HandlerKind kind : kHandlerOrder) {
        const bool present = std::any_of(results.begin(), results.end(), [&](const ScenarioResult& r) {
            return r.spec.handler == kind;
        });
        if (!present) continue;
        svg << "<rect x=\"" << x << "\" y=\"46\" width=\"12\" height=\"12\" fill=\"" << color(kind) << "\"/>"
            << "<text x=\"" << x + 16 << "\" y=\"56\" class=\"legend\">" << handler_name(kind) << "</text>\n";
        x += 130;
    }
}

}  // namespace

std::string render_svg(const std::vector<ScenarioResult>& results, const RunInfo& info) {
    const auto time_groups = bar_groups(results, time_figure);
    const auto p99_groups = bar_groups(results, p99_figure);
    size_t bars = 0;
    for (const BarGroup& g : time_groups) bars += g.bars.size();
    const double width = std::max(720.0, kLeft + kRight + static_cast<double>(bars) * kBarWidth +
                                             static_cast<double>(time_groups.size()) * kGroupGap);
    const double panel_span = kPanelTop + kPanelHeight + kLabelSpace;
    const double height = kLegendHeight + 2 * panel_span;
    std::ostringstream svg;
    svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << fmt(width) << "\" height=\"" << fmt(height)
        << "\" viewBox=\"0 0 " << fmt(width) << " " << fmt(height) << "\" font-family=\"sans-serif\">\n"
        << "<style>.heading{font-size:14px;font-weight:bold}.title{font-size:12px;font-weight:bold}"
           ".axis{font-size:10px;text-anchor:end;fill:#444}.group{font-size:9px;text-anchor:middle}"
           ".ref{font-size:8px;text-anchor:middle;fill:#777}.value{font-size:8px;fill:#333}"
           ".legend{font-size:11px}.grid{stroke:#ddd;stroke-width:1}.one{stroke:#000;stroke-width:1.2}</style>\n"
        << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
    draw_legend(svg, results, info);
    draw_panel(svg, time_groups, "Time until the workload finished (none: until fully resident), relative to baseline",
               kLegendHeight + kPanelTop, width);
    draw_panel(svg, p99_groups, "p99 first-touch fault latency, relative to baseline",
               kLegendHeight + panel_span + kPanelTop, width);
    svg << "</svg>\n";
    return svg.str();
}

bool write_svg(const std::string& path, const std::vector<ScenarioResult>& results, const RunInfo& info,
               std::string& error) {
    std::ofstream out(path);
    out << render_svg(results, info);
    if (!out) {
        error = "cannot write " + path;
        return false;
    }
    return true;
}

}  // namespace ringpager::bench
