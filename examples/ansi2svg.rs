//! Turn a terminal frame captured with `tmux capture-pane -p -e` (text with SGR colour codes)
//! into an SVG picture. Used by scripts/screenshots; not part of cutover itself.
//!
//! cargo run --example ansi2svg < frame.ansi > frame.svg

use std::io::Read;

#[derive(Clone, Copy, PartialEq)]
struct Style {
    fg: Option<(u8, u8, u8)>,
    bg: Option<(u8, u8, u8)>,
    bold: bool,
    reverse: bool,
}

const PLAIN: Style = Style {
    fg: None,
    bg: None,
    bold: false,
    reverse: false,
};
const DEFAULT_FG: (u8, u8, u8) = (0xd0, 0xd0, 0xd0);
const DEFAULT_BG: (u8, u8, u8) = (0x12, 0x14, 0x18);

fn palette(i: u8) -> (u8, u8, u8) {
    const BASE: [(u8, u8, u8); 16] = [
        (0, 0, 0),
        (205, 49, 49),
        (13, 188, 121),
        (229, 229, 16),
        (36, 114, 200),
        (188, 63, 188),
        (17, 168, 205),
        (229, 229, 229),
        (102, 102, 102),
        (241, 76, 76),
        (35, 209, 139),
        (245, 245, 67),
        (59, 142, 234),
        (214, 112, 214),
        (41, 184, 219),
        (255, 255, 255),
    ];
    match i {
        0..=15 => BASE[i as usize],
        16..=231 => {
            let i = i - 16;
            let c = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            (c(i / 36), c((i / 6) % 6), c(i % 6))
        }
        _ => {
            let v = 8 + (i - 232) * 10;
            (v, v, v)
        }
    }
}

fn apply(style: &mut Style, params: &[u16]) {
    let params = if params.is_empty() { &[0][..] } else { params };
    let mut i = 0;
    while i < params.len() {
        let p = params[i];
        match p {
            0 => *style = PLAIN,
            1 => style.bold = true,
            22 => style.bold = false,
            7 => style.reverse = true,
            27 => style.reverse = false,
            30..=37 => style.fg = Some(palette((p - 30) as u8)),
            90..=97 => style.fg = Some(palette((p - 90 + 8) as u8)),
            40..=47 => style.bg = Some(palette((p - 40) as u8)),
            100..=107 => style.bg = Some(palette((p - 100 + 8) as u8)),
            39 => style.fg = None,
            49 => style.bg = None,
            38 | 48 => {
                let colour = match params.get(i + 1) {
                    Some(5) => {
                        let c = params.get(i + 2).map(|&v| palette(v as u8));
                        i += 2;
                        c
                    }
                    Some(2) => {
                        let c = match (params.get(i + 2), params.get(i + 3), params.get(i + 4)) {
                            (Some(&r), Some(&g), Some(&b)) => Some((r as u8, g as u8, b as u8)),
                            _ => None,
                        };
                        i += 4;
                        c
                    }
                    _ => None,
                };
                if p == 38 {
                    style.fg = colour;
                } else {
                    style.bg = colour;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

fn hex((r, g, b): (u8, u8, u8)) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

fn esc(c: char) -> String {
    match c {
        '&' => "&amp;".into(),
        '<' => "&lt;".into(),
        '>' => "&gt;".into(),
        '"' => "&quot;".into(),
        c => c.to_string(),
    }
}

fn parse(input: &str) -> Vec<Vec<(char, Style)>> {
    let mut rows = Vec::new();
    for line in input.lines() {
        let mut row = Vec::new();
        let mut style = PLAIN;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' && chars.peek() == Some(&'[') {
                chars.next();
                let mut seq = String::new();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        if d == 'm' {
                            let params: Vec<u16> =
                                seq.split(';').filter_map(|p| p.parse().ok()).collect();
                            apply(&mut style, &params);
                        }
                        break;
                    }
                    seq.push(d);
                }
                continue;
            }
            row.push((c, style));
        }
        rows.push(row);
    }
    rows
}

type Rgb = (u8, u8, u8);

fn colours(s: &Style) -> (Rgb, Option<Rgb>) {
    let (fg, bg) = (s.fg.unwrap_or(DEFAULT_FG), s.bg);
    if s.reverse {
        (bg.unwrap_or(DEFAULT_BG), Some(fg))
    } else {
        (fg, bg)
    }
}

fn main() {
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let rows = parse(&input);
    let (cw, ch, fs) = (8.4_f64, 17.0_f64, 14.0_f64);
    let cols = rows.iter().map(Vec::len).max().unwrap_or(80).max(1);
    let (w, h) = (cols as f64 * cw + 16.0, rows.len() as f64 * ch + 16.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"{}\"/>\n\
         <g font-family=\"DejaVu Sans Mono, monospace\" font-size=\"{fs}\" xml:space=\"preserve\">\n",
        hex(DEFAULT_BG)
    );
    for (y, row) in rows.iter().enumerate() {
        let top = 8.0 + y as f64 * ch;
        // Backgrounds: one rect per run of the same colour.
        let mut x = 0;
        while x < row.len() {
            let bg = colours(&row[x].1).1;
            let start = x;
            while x < row.len() && colours(&row[x].1).1 == bg {
                x += 1;
            }
            if let Some(bg) = bg {
                out.push_str(&format!(
                    "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{ch}\" fill=\"{}\"/>\n",
                    8.0 + start as f64 * cw,
                    (x - start) as f64 * cw,
                    hex(bg)
                ));
            }
        }
        // Text: one element per run of the same style, every cell placed on the grid.
        let mut x = 0;
        while x < row.len() {
            let st = row[x].1;
            let start = x;
            while x < row.len() && row[x].1 == st {
                x += 1;
            }
            let text: String = row[start..x].iter().map(|(c, _)| *c).collect();
            if text.trim().is_empty() {
                continue;
            }
            let xs: Vec<String> = (start..x)
                .map(|i| format!("{:.1}", 8.0 + i as f64 * cw))
                .collect();
            out.push_str(&format!(
                "<text x=\"{}\" y=\"{:.1}\" fill=\"{}\"{}>{}</text>\n",
                xs.join(" "),
                top + ch * 0.78,
                hex(colours(&st).0),
                if st.bold { " font-weight=\"bold\"" } else { "" },
                text.chars().map(esc).collect::<String>()
            ));
        }
    }
    out.push_str("</g>\n</svg>\n");
    print!("{out}");
}
